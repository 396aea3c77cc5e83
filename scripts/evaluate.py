"""Evaluate a saved policy from its checkpoint alone: ``python scripts/evaluate.py RUN_OR_CKPT``."""

from __future__ import annotations

import argparse
import json
import sys

from agents.checkpoint import better_checkpoint, recorded_evaluation
from agents.cli import ArgumentParser, run_main
from agents.evaluation import RECALIBRATION_SOURCES, evaluate_checkpoint


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description="Play greedy episodes with a saved qnorm policy.")
    p.add_argument("path", help="a run directory (its final checkpoint) or a checkpoint directory")
    p.add_argument("--episodes", type=int, default=10, help="episodes to play (default: 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first reset (default: 0)")
    p.add_argument("--env-id", default=None, help="another env with the same spaces")
    p.add_argument("--video", metavar="DIR", default=None, help="record mp4s of the episodes")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument(
        "--no-fold", action="store_true", help="keep BatchNorm layers instead of folding them"
    )
    p.add_argument(
        "--recalibrate",
        type=int,
        default=0,
        metavar="N",
        help="first recompute BatchNorm's running statistics from N states the policy visits "
        "(its own episodes): do stale statistics explain a poor score?",
    )
    p.add_argument(
        "--recalibrate-from",
        choices=RECALIBRATION_SOURCES,
        default="policy",
        help="where --recalibrate takes its states: the policy's own episodes, or the newest "
        "states of the run's replay memory (its training-state snapshot), the distribution "
        "its training batches came from (default: policy)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    policy, result = evaluate_checkpoint(
        args.path,
        args.episodes,
        args.seed,
        args.env_id,
        args.video,
        fold=not args.no_fold,
        recalibrate=args.recalibrate,
        recalibrate_from=args.recalibrate_from,
    )
    summary = summarize(policy, result, args.env_id)
    if args.json:
        print(json.dumps(summary))
        return 0
    report(summary, result)
    if args.video:
        print(f"videos: {args.video}")
    return 0


def summarize(policy, result, env_id: str | None) -> dict:
    """Everything the evaluation found, as the JSON object ``--json`` prints."""
    better = better_checkpoint(policy.path)
    return {
        "env_id": env_id or policy.env_id,
        "checkpoint": str(policy.path),
        "checkpoint_name": policy.path.name,  # final, best, or the step of a periodic one
        "step": policy.step,
        "norm": policy.spec.norm,
        "episodes": len(result.returns),
        "mean_return": result.mean_return,
        "std_return": result.std_return,
        "returns": result.returns,
        "lengths": result.lengths,
        "median_action_gap": result.median_action_gap,
        "mean_best_value": result.mean_best_value,
        "terminal_observations": [obs.tolist() for obs in result.terminal_observations],
        "training_evaluation": recorded_evaluation(policy.path),
        "better_in_run": None if better is None else {"checkpoint": str(better[0]), **better[1]},
        "recalibrated": result.recalibration,
    }


def report(summary: dict, result) -> None:
    """The evaluation in a few lines for a person."""
    print(
        f"{summary['env_id']}: {summary['checkpoint']} (step {summary['step']}, "
        f"norm {summary['norm']})"
    )
    print(
        f"mean return {result.mean_return:.2f} +/- {result.std_return:.2f} "
        f"over {len(result.returns)} episodes"
    )
    print(
        f"greedy choices: median gap {result.median_action_gap:.3g} between the best two "
        f"actions' values, which average {result.mean_best_value:.3g} for the best"
    )
    print(
        f"ended by the env before its time limit: {len(result.terminal_observations)} of "
        f"{len(result.returns)} episodes (their last observations: --json)"
    )
    if result.recalibration is not None:
        print(recalibration_text(result.recalibration))
    choice = checkpoint_choice_text(summary)
    if choice:
        print(choice)


def recalibration_text(done: dict) -> str:
    """Which running statistics were recomputed, and from what states."""
    if not done["modules"]:
        return "no BatchNorm layers: nothing to recalibrate"
    source = (
        f"the policy's own episodes (seed {done['seed']})"
        if done["source"] == "policy"
        else f"the run's replay memory (snapshot at step {done['snapshot_step']:,})"
    )
    return (
        f"running statistics of {done['modules']} layer(s) recomputed first from "
        f"{done['states']} states of {source}"
    )


def checkpoint_choice_text(summary: dict) -> str:
    """Which of the run's checkpoints this was, and whether a better one exists (empty when
    training recorded no evaluation to compare)."""
    name, mine, better = (
        summary["checkpoint_name"],
        summary["training_evaluation"],
        summary["better_in_run"],
    )
    if better is not None:
        path = better["checkpoint"]
        return (
            f"this is the run's {name!r} checkpoint; a better one exists: {path} (step "
            f"{better['step']:,}) scored {better['mean_return']:.2f} in training's greedy "
            f"evaluation ({better['episodes']} episodes)"
            + (f", this one {mine['mean_return']:.2f}" if mine else "")
            + f"; evaluate it with: python scripts/evaluate.py {path}"
        )
    if mine is not None:
        return (
            f"this is the run's {name!r} checkpoint; no other checkpoint of the run scored "
            "higher in training's greedy evaluation"
        )
    return ""


if __name__ == "__main__":
    sys.exit(run_main(main))
