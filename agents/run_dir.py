"""Run directories: ``runs/<env>__<norm>__<seed>__<time>/`` with the run's config.json."""

from __future__ import annotations

import re
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
        write_json(run_dir / "config.json", config.to_dict())
    except OSError as exc:
        raise QnormError(f"cannot write the run directory {run_dir}: {exc.strerror}") from None
    return run_dir
