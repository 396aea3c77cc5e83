"""Run a multi-seed normalization study and write its tables and plots.

python scripts/study.py --quick                       # a small study, a few minutes
python scripts/study.py --protocol minatar            # MinAtar Breakout and SpaceInvaders, 500k
python scripts/study.py                               # every env, variant and 5 seeds
python scripts/study.py --ray-address auto            # the same grid on a Ray cluster
python scripts/study.py --protocol minatar --per-run  # each run's numbers, from its results
"""

from __future__ import annotations

import argparse
import sys

from agents.cli import ArgumentParser, parse_settings, run_main
from agents.study.grid import DEFAULT_VARIANTS, ENVS, VARIANTS
from agents.study.per_run import LAST_EVALUATIONS, markdown_table, read_run_numbers
from agents.study.stats import BOOTSTRAP_REPS
from agents.study.study import PROTOCOLS, StudySpec, run_study


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", default=None, help="study name (default: main, or the protocol's)")
    # Unset, these come from --protocol, else the full vector grid.
    p.add_argument("--envs", nargs="+", default=None, help=f"default: {' '.join(ENVS)}")
    p.add_argument("--variants", nargs="+", default=None, choices=list(VARIANTS))
    p.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="how many seeds (default: 5): 0..N-1, or from the protocol's first seed",
    )
    p.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="study-wide config overrides, e.g. run.total_timesteps=50000",
    )
    p.add_argument("--workers", type=int, default=None, help="parallel local processes")
    p.add_argument("--runs-dir", default="runs/study", help="where run directories go")
    p.add_argument("--results-dir", default="results", help="where tables and plots go")
    p.add_argument("--out", default="", help="results folder (default: RESULTS_DIR/NAME)")
    p.add_argument("--ray-address", default="", help="run on Ray: 'auto', 'local' or an address")
    p.add_argument(
        "--storage",
        default="",
        metavar="URL",
        help="copy each cell's run directory to URL/NAME/ (e.g. s3://bucket/studies, with s3fs)",
    )
    p.add_argument(
        "--protocol",
        default="",
        choices=list(PROTOCOLS),
        help="a named grid instead of --envs/--variants/--seeds: " + ", ".join(PROTOCOLS),
    )
    p.add_argument(
        "--quick",
        action="store_const",
        const="quick",
        dest="protocol",
        help="small grid: CartPole, 2 seeds, 8k steps (--protocol quick)",
    )
    p.add_argument("--aggregate-only", action="store_true", help="only rebuild tables and plots")
    p.add_argument(
        "--per-run",
        action="store_true",
        help="only print each recorded run's final and best return, the mean of its last "
        f"{LAST_EVALUATIONS} evaluations and its AUC, from the results' runs.csv",
    )
    p.add_argument(
        "--rerun",
        action="store_true",
        help="run the chosen cells again though finished (e.g. after a new tuned preset); "
        "their old results stay until the new runs finish, their old run directories are kept",
    )
    p.add_argument(
        "--bootstrap-reps",
        type=int,
        default=None,
        help=f"bootstrap resamples per interval (default: {BOOTSTRAP_REPS})",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    cli = parser()
    args = cli.parse_args(argv)
    if args.bootstrap_reps is not None and args.bootstrap_reps < 1:
        cli.error("--bootstrap-reps must be at least 1")
    if args.rerun and (args.aggregate_only or args.per_run):
        cli.error("--rerun trains: it cannot go with --aggregate-only or --per-run")
    grid = {"envs": list(ENVS), "variants": list(DEFAULT_VARIANTS), "seeds": 5}
    grid.update(PROTOCOLS.get(args.protocol, {}))
    spec = StudySpec(
        name=args.name or args.protocol or "main",
        envs=args.envs or grid["envs"],
        variants=args.variants or grid["variants"],
        seeds=args.seeds or grid["seeds"],
        first_seed=grid.get("first_seed", 0),
        overrides={**grid.get("overrides", {}), **parse_settings(args.set)},
        runs_dir=args.runs_dir,
        results_dir=args.results_dir,
        ray_address=args.ray_address,
        storage=args.storage,
        out=args.out,
        bootstrap_reps=args.bootstrap_reps,
        diagnosis=grid.get("diagnosis", False),
    )
    if args.workers:
        spec.workers = args.workers
    if args.per_run:
        rows = read_run_numbers(spec.results_root / "runs.csv", spec.grid())
        print(markdown_table(rows), end="")
        return 0
    run_study(spec, train=not args.aggregate_only, rerun=args.rerun)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
