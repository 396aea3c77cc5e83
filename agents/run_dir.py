"""Run directories: ``runs/<env>__<norm>__<seed>__<time>/`` with the run's config.json."""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
import time
from pathlib import Path

from agents.checkpoint import write_json
from agents.config import TrainConfig
from qnorm import QnormError


def path_safe(env_id: str) -> str:
    """``env_id`` as one path component: ``MinAtar/Breakout-v1`` -> ``MinAtar_Breakout-v1``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", env_id)


def default_run_dir(config: TrainConfig) -> Path:
    """The conventional run directory name under ``runs/``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"{path_safe(config.run.env_id)}__{config.network.norm}__{config.run.seed}__{stamp}"
    return Path("runs") / name


def create_run_dir(config: TrainConfig) -> Path:
    """Create a new, empty run directory and write config.json; never reuse one with data."""
    run_dir = Path(config.run.run_dir) if config.run.run_dir else default_run_dir(config)
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise QnormError(f"run directory {run_dir} already exists and is not empty")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise QnormError(f"cannot write the run directory {run_dir}: {exc.strerror}") from None
    lock_run_dir(run_dir)
    if any(run_dir.iterdir()):  # another process made it between the check and the lock
        raise QnormError(f"run directory {run_dir} already exists and is not empty")
    try:
        write_json(run_dir / "config.json", config.to_dict())
    except OSError as exc:
        raise QnormError(f"cannot write the run directory {run_dir}: {exc.strerror}") from None
    return run_dir


# Open descriptors of the run directories this process trains in: each holds a lock.
_LOCKS: dict[Path, int] = {}


def lock_run_dir(run_dir: Path) -> None:
    """Hold an exclusive lock on ``run_dir`` for this process; another trainer is refused.

    The lock is flock(2) on the directory itself: no lock file to go stale, and the kernel
    drops it when the process ends, however it ends (SIGKILL included).
    """
    fd = os.open(run_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise QnormError(
            f"{run_dir} is in use by another training process; wait for it to end"
        ) from None
    _LOCKS[Path(run_dir)] = fd


def unlock_run_dir(run_dir: Path) -> None:
    """Release the lock ``lock_run_dir`` took (training ended)."""
    fd = _LOCKS.pop(Path(run_dir), None)
    if fd is not None:
        os.close(fd)


# The folders a run writes into besides its own: checkpoints, and an image run's frame chunks.
WRITTEN_SUBDIRS = ("checkpoints", "state.frames")


def check_writable(run_dir: Path) -> None:
    """Refuse a run directory (or the folders in it that training writes) that is read-only.

    Tried with an unnamed temporary file, so the check itself leaves nothing behind.
    """
    run_dir = Path(run_dir)
    for folder in (run_dir, *(run_dir / name for name in WRITTEN_SUBDIRS)):
        if not folder.is_dir():
            continue
        try:
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as exc:
            raise QnormError(
                f"cannot write in {folder} ({exc.strerror or exc}); the run is left as it was"
            ) from None
