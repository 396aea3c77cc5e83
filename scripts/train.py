"""Train a DQN agent: ``python scripts/train.py --env-id CartPole-v1 --norm batchnorm``."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from agents import train
from agents.cli import parse_train_command, run_main
from agents.envs import env_module
from agents.interrupts import Interrupted


def _shown_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it, else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _tensorboard_command() -> str:
    """The ``tensorboard`` installed beside this interpreter, so it runs without activating."""
    beside = Path(sys.executable).parent / "tensorboard"
    return shlex.quote(_shown_path(beside)) if beside.is_file() else "tensorboard"


def main(argv: list[str] | None = None) -> int:
    config, resume = parse_train_command(argv)
    python = shlex.quote(_shown_path(Path(sys.executable)))
    try:
        result = train(config, resume=resume)
    except Interrupted as stop:
        print(stop.message(), file=sys.stderr)
        note = stop.resume_note()
        if note:
            print(note, file=sys.stderr)
        if stop.snapshot is not None:
            this = shlex.quote(_shown_path(Path(__file__).resolve()))
            run = shlex.quote(str(stop.snapshot.parent))
            print(f"resume: {python} {this} --resume {run}", file=sys.stderr)
        return stop.exit_status
    run_dir = shlex.quote(str(result.run_dir))
    evaluate = shlex.quote(_shown_path(Path(__file__).resolve().parent / "evaluate.py"))
    print(f"final checkpoint: {result.final_checkpoint}")
    if result.best_checkpoint is not None:
        print(f"best checkpoint:  {result.best_checkpoint}")
    if result.evaluations:
        step, mean = result.evaluations[-1]
        print(f"last greedy evaluation: mean return {mean:.1f} at step {step}")
    # evaluate.py imports an env's module only when told to: a user env's id goes along.
    env_flag = (
        f" --env-id {shlex.quote(config.run.env_id)}" if env_module(config.run.env_id) else ""
    )
    print(f"evaluate:    {python} {evaluate} {run_dir}{env_flag}")
    # The default layout puts every run below runs/; a run dir the user named may sit
    # anywhere (a checkout's root, with its .venv), so its own folder is the logdir.
    logdir = shlex.quote(str(result.run_dir if config.run.run_dir else result.run_dir.parent))
    print(f"tensorboard: {_tensorboard_command()} --logdir {logdir}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
