"""Benchmark qnorm against Stable-Baselines3's DQN at identical work (needs ``.[bench]``).

python scripts/benchmark.py                 # SPS ratios for zoo and per-step, latencies
python scripts/benchmark.py --solve         # also: seconds to solve CartPole-v1
python scripts/benchmark.py --snapshots     # what a --resume snapshot costs (writes ~8 GB)
python scripts/benchmark.py --guard-cost    # the NaN guard's share of the training loop
python scripts/benchmark.py --pixels --skip-speed --minatar-reference PATH
    # CNN latencies in place of the MLP ones, and MinAtar Breakout training speed beside
    # MinAtar's examples/dqn.py (PATH: your own copy of that file; it is not part of qnorm)
"""

from __future__ import annotations

import argparse
import platform
import sys
from dataclasses import replace

import torch

from agents.bench import guard_cost, pixel_suite, snapshot_cost, suite
from agents.bench.configs import CONFIGS
from agents.bench.pixel_latency import Budget
from agents.cli import ArgumentParser, run_main


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), help="benchmark configs")
    p.add_argument("--norms", nargs="+", default=["none", "batchnorm", "layernorm"])
    p.add_argument("--repeats", type=int, default=3, help="alternating pairs per cell")
    p.add_argument("--threads", type=int, default=1, help="torch threads for both libraries")
    p.add_argument("--solve", action="store_true", help="also time solving CartPole-v1")
    p.add_argument("--solve-seeds", type=int, default=5)
    p.add_argument("--total-timesteps", type=int, default=0, help="override the configs' steps")
    p.add_argument("--skip-speed", action="store_true", help="only latencies (and --solve)")
    p.add_argument(
        "--pixels", action="store_true", help="CNN latencies (MinAtar, Atari) in place of MLP ones"
    )
    p.add_argument("--pixel-repeats", type=int, default=Budget.repeats, help="CNN latency repeats")
    p.add_argument(
        "--pixel-seconds", type=float, default=Budget.seconds, help="seconds per CNN timing"
    )
    p.add_argument(
        "--minatar-reference",
        metavar="PATH",
        help="with --pixels: your copy of MinAtar's examples/dqn.py, to time training beside it",
    )
    p.add_argument("--minatar-steps", type=int, default=20_000, help="env steps per MinAtar run")
    p.add_argument(
        "--snapshots",
        action="store_true",
        help="only the cost of training-state snapshots (CartPole and 1M Atari frames)",
    )
    p.add_argument(
        "--guard-cost",
        action="store_true",
        help="only the NaN guard's share of the training loop (--configs, --repeats)",
    )
    p.add_argument("--snapshot-atari", type=int, default=1_000_000, help="Atari transitions")
    p.add_argument("--snapshot-new", type=int, default=50_000, help="frames between snapshots")
    p.add_argument("--snapshot-dir", default=None, help="where to write them (a temp folder)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.minatar_reference:
        if not args.pixels:
            p.error("--minatar-reference needs --pixels")
        pixel_suite.check_reference(args.minatar_reference)  # fail before any timing
    out = print
    out(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"default torch threads; torch {torch.__version__}; benchmark threads {args.threads}"
    )
    if args.guard_cost:
        guard_cost.report(out, args.configs, args.total_timesteps or 20_000, args.repeats)
        return 0
    if args.snapshots:
        snapshot_cost.report(
            out, 100_000, args.snapshot_atari, args.snapshot_new, args.repeats, args.snapshot_dir
        )
        return 0
    if not args.skip_speed:
        configs = suite.config_list(args.configs)
        if args.total_timesteps:
            configs = [replace(c, total_timesteps=args.total_timesteps) for c in configs]
        summary = suite.speed(configs, args.norms, args.repeats, args.threads, out)
        suite.print_speed_summary(summary, out)
    torch.set_num_threads(args.threads)
    if args.pixels:
        pixel_suite.latencies(Budget(args.pixel_repeats, args.pixel_seconds), out)
    else:
        suite.latencies(args.norms, out)
    if args.minatar_reference:
        pixel_suite.minatar_comparison(
            args.minatar_reference, args.minatar_steps, args.repeats, args.threads, out
        )
    if args.solve:
        suite.solve(args.solve_seeds, args.threads, out)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
