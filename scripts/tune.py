"""Tune one study variant's hyperparameters on one env with Optuna (needs ``.[tune]``).

python scripts/tune.py --env-id CartPole-v1 --variant batchnorm --trials 50
python scripts/tune.py --env-id CartPole-v1 --variant batchnorm --export   # best -> presets
python scripts/tune.py --env-id CartPole-v1 --variant batchnorm --amend dqn.n_step=3 \
    --because "what chose it, on tuning seeds"   # a setting added to the tuned preset
    # the same command again continues an interrupted tuning; --storage postgresql://...
    # (any Optuna database URL) lets several machines run trials of one study together
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from agents.cli import ArgumentParser, config_from_flags, parse_settings, run_main
from agents.config import validate
from agents.interrupts import Interrupted
from agents.study.grid import ENVS, VARIANTS
from agents.tuning.presets import amend_preset, export_best, presets_file, read_presets
from agents.tuning.report import write_presets_table
from agents.tuning.selection import best_settings, tune_and_confirm
from agents.tuning.tuning import TuneSpec, counted, open_study, write_trials_csv
from qnorm import QnormError


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env-id", required=True, help=f"e.g. {', '.join(ENVS)}")
    p.add_argument("--variant", required=True, choices=list(VARIANTS))
    p.add_argument("--trials", type=int, default=50, help="trial budget (finished or pruned)")
    p.add_argument("--seeds-per-trial", type=int, default=1)
    p.add_argument(
        "--confirm-top",
        type=int,
        default=TuneSpec.confirm_top,
        help="after the budget, run this many best trials again on fresh seeds (0: off)",
    )
    p.add_argument(
        "--confirm-seeds",
        type=int,
        default=TuneSpec.confirm_seeds,
        help="fresh seeds per confirmed trial; the export takes the best mean over all seeds",
    )
    p.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="settings every trial shares, e.g. run.total_timesteps=50000",
    )
    p.add_argument("--storage", default=TuneSpec.storage, help="an Optuna database URL")
    p.add_argument("--runs-dir", default=TuneSpec.runs_dir, help="where trial runs go")
    p.add_argument(
        "--sampler-seed",
        type=int,
        default=None,
        help="seed of the TPE sampler, for a reproducible tuning on one worker (default: "
        "fresh entropy; workers started together on one study need different seeds)",
    )
    p.add_argument(
        "--export",
        action="store_true",
        help="only write the best trial's settings to the tuned presets (no new trials)",
    )
    p.add_argument(
        "--amend",
        nargs="+",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="only add these settings to the exported preset (no new trials); needs --because",
    )
    p.add_argument("--because", default="", help="the evidence for --amend, kept beside it")
    p.add_argument(
        "--presets",
        default=str(presets_file()),
        help="the tuned presets file --export writes (default: $QNORM_TUNED_PRESETS, else "
        "the shipped agents/tuned_presets.json)",
    )
    p.add_argument(
        "--summary",
        default="results/tuning/presets.md",
        help="the Markdown table of every tuned preset that --export rewrites",
    )
    p.add_argument(
        "--trials-csv", default="", help="where to list the trials (results/tuning/STUDY.csv)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    spec = TuneSpec(
        env_id=args.env_id,
        variant=args.variant,
        trials=args.trials,
        seeds_per_trial=args.seeds_per_trial,
        confirm_top=args.confirm_top,
        confirm_seeds=args.confirm_seeds,
        overrides=parse_settings(args.set),
        storage=args.storage,
        runs_dir=args.runs_dir,
        sampler_seed=args.sampler_seed,
    )
    if args.export:
        return export(spec, Path(args.presets), Path(args.summary))
    if args.amend:
        return amend(
            spec, parse_settings(args.amend), args.because, Path(args.presets), Path(args.summary)
        )
    trials_csv = Path(args.trials_csv or f"results/tuning/{spec.study_name}.csv")
    try:
        study = tune_and_confirm(spec)
    except Interrupted as stop:
        write_trials_csv(open_study(spec), trials_csv)
        print(
            f"interrupted by {signal.Signals(stop.signum).name}; the trial cut short does not "
            "count against the budget: run the same command again to continue the tuning",
            file=sys.stderr,
        )
        return stop.exit_status
    write_trials_csv(study, trials_csv)
    print(f"trials: {trials_csv}")
    best = best_settings(study)
    if best is not None:
        scores = ", ".join(f"{score:.1f}" for score in best["scores"])
        print(
            f"best so far: trial {best['trial']}, mean {best['score']:.1f} over its seeds "
            f"({scores}): {best['settings']}"
        )
    return 0


def export(spec: TuneSpec, path: Path, summary: Path) -> int:
    study = open_study(spec, create=False)
    best = best_settings(study)
    if best is None:
        raise QnormError(f"study {spec.study_name} has no finished trial to export")
    # a study kept outside the default storage is named with its storage, so it can be found
    where = "" if spec.storage == TuneSpec.storage else f" in {spec.storage}"
    name = spec.study_name + where
    entry = export_best(spec.env_id, spec.variant, best, counted(study), name, path)
    write_presets_table(read_presets(path), summary)
    print(f"{path}: {spec.env_id} {spec.variant} <- trial {entry['trial']}; table: {summary}")
    return 0


def amend(spec: TuneSpec, settings: dict, because: str, path: Path, summary: Path) -> int:
    # named, typed and checked as a run of the variant would take them (an unknown,
    # ill-typed or contradictory setting is refused)
    config = config_from_flags({"run.env_id": spec.env_id, **VARIANTS[spec.variant], **settings})
    validate(config)
    typed = {}
    for key in settings:
        section, _, name = key.partition(".")
        value = getattr(getattr(config, section), name)
        typed[key] = list(value) if isinstance(value, tuple) else value
    entry = amend_preset(spec.env_id, spec.variant, typed, because, path)
    write_presets_table(read_presets(path), summary)
    print(f"{path}: {spec.env_id} {spec.variant} amended with {entry['amended']}; table: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
