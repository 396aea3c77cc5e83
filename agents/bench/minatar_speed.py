"""MinAtar Breakout training speed: qnorm's preset run, and MinAtar's own reference DQN.

The reference is the user's copy of MinAtar's ``examples/dqn.py`` (not shipped with the
``minatar`` package, and not part of qnorm), imported from its path; its ``__main__`` guard
keeps its command line from running. Both sides run the first ``steps`` frames of the same
5M-frame recipe: one 16-channel conv, 128 hidden units, centered RMSprop, batch 32, one update
per frame after 5000 random frames, epsilon falling 0.9 per 100k frames.
"""

from __future__ import annotations

import importlib.util
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from unittest import mock

import numpy as np
import torch

from agents.cli import config_from_flags
from agents.config import TrainConfig
from agents.envs import check_env_id
from agents.extras import install_command
from agents.presets import preset_for
from agents.schedules import linear_epsilon
from agents.training import Trainer, train
from qnorm import QnormError

ENV_ID = "MinAtar/Breakout-v1"
REFERENCE_GAME = "breakout"
REFERENCE_NAMES = ("dqn", "train", "NUM_FRAMES", "TRAINING_FREQ", "Environment")


@dataclass
class MinatarTiming:
    """One timed run: all its frames, and those after learning started (the first update on)."""

    library: str
    seed: int
    seconds: float
    steps: int
    learning_seconds: float | None  # None when no update ran
    learning_steps: int

    @property
    def sps(self) -> float:
        """Environment steps per second over the whole run, random warm-up frames included."""
        return self.steps / self.seconds

    @property
    def learning_sps(self) -> float | None:
        """Environment steps per second from the first update to the end."""
        if not self.learning_seconds:
            return None
        return self.learning_steps / self.learning_seconds


class UpdateClock:
    """Counts calls of an update function and notes when the first began."""

    def __init__(self) -> None:
        self.calls = 0
        self.first: float | None = None

    def wrap(self, fn):
        """``fn``, counted; one counter and one clock read per call."""

        def counted(*args, **kwargs):
            if self.first is None:
                self.first = time.perf_counter()
            self.calls += 1
            return fn(*args, **kwargs)

        return counted


def warm_up_imports() -> None:
    """Pay one-time imports before a clock starts: MinAtar's, and torch's on a first optimizer.

    Each costs seconds on a small machine (torch imports its compiler stack when the first
    optimizer is built), and both sides would otherwise pay them inside their timed runs.
    """
    check_env_id(ENV_ID)  # imports minatar and registers its gymnasium ids
    torch.optim.RMSprop([torch.nn.Parameter(torch.zeros(1))])


def exploration_of_full_run(steps: int) -> dict[str, float]:
    """Epsilon settings under which ``steps`` steps follow the preset's full-length schedule."""
    preset = preset_for(ENV_ID)
    total, fraction = preset["run.total_timesteps"], preset["dqn.exploration_fraction"]
    final = preset["dqn.exploration_final_eps"]
    decay_steps = fraction * total
    return {
        "dqn.exploration_fraction": min(1.0, decay_steps / steps),
        "dqn.exploration_final_eps": linear_epsilon(steps, total, fraction, 1.0, final),
    }


def qnorm_config(steps: int, seed: int, threads: int, run_dir: str) -> TrainConfig:
    """The MinAtar preset as ``scripts/train.py`` runs it, for ``steps`` steps, no evaluation."""
    flags = {
        "run.env_id": ENV_ID,
        "run.total_timesteps": steps,
        "run.seed": seed,
        "run.run_dir": run_dir,
        "run.eval_freq": 0,
        "run.progress": False,
        "run.device": "cpu",
        "run.torch_threads": threads,
        **exploration_of_full_run(steps),
    }
    return config_from_flags(flags)


def time_qnorm(steps: int, seed: int, threads: int) -> MinatarTiming:
    """Train qnorm once; the clock covers set-up, training and the final checkpoint.

    ``Trainer.learn`` (one update phase) is wrapped by a counter, as the reference's ``train``.
    """
    warm_up_imports()
    clock = UpdateClock()
    with tempfile.TemporaryDirectory() as tmp:
        config = qnorm_config(steps, seed, threads, f"{tmp}/run")
        with mock.patch.object(Trainer, "learn", clock.wrap(Trainer.learn)):
            start = time.perf_counter()
            result = train(config)
            end = time.perf_counter()
    per_update = config.dqn.train_freq * config.run.num_envs
    return _timing("qnorm", seed, start, end, result.global_step, clock, per_update)


def load_reference(path: str | Path) -> ModuleType:
    """MinAtar's ``examples/dqn.py`` from the user's copy at ``path``, imported as a module."""
    file = Path(path)
    if not file.is_file():
        raise QnormError(
            f"the MinAtar reference {str(path)!r} is not a file: give the path of your copy "
            "of MinAtar's examples/dqn.py"
        )
    spec = importlib.util.spec_from_file_location("minatar_reference_dqn", file)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as exc:
        raise QnormError(
            f"the MinAtar reference {str(path)!r} cannot be imported ({exc}); "
            f"{install_command('minatar')}"
        ) from None
    missing = [name for name in REFERENCE_NAMES if not hasattr(module, name)]
    if missing:
        raise QnormError(
            f"{str(path)!r} does not look like MinAtar's examples/dqn.py: it has no "
            f"{', '.join(missing)}"
        )
    return module


def time_reference(path: str | Path, steps: int, seed: int, threads: int) -> MinatarTiming:
    """Run the reference DQN once; the clock covers making its env and its ``dqn`` call.

    ``train`` (one update) is wrapped by a counter to time the frames after learning starts.
    """
    module = load_reference(path)
    warm_up_imports()
    module.NUM_FRAMES = steps
    torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    clock = UpdateClock()
    with (
        tempfile.TemporaryDirectory() as tmp,
        mock.patch.object(module, "train", clock.wrap(module.train)),
    ):
        start = time.perf_counter()
        env = module.Environment(REFERENCE_GAME)
        if hasattr(env, "seed"):
            env.seed(seed)
        module.dqn(env, replay_off=False, target_off=False, output_file_name=f"{tmp}/{seed}")
        end = time.perf_counter()
    return _timing("reference", seed, start, end, steps, clock, module.TRAINING_FREQ)


def _timing(library, seed, start, end, steps, clock: UpdateClock, per_update) -> MinatarTiming:
    learning = None if clock.first is None else end - clock.first
    return MinatarTiming(library, seed, end - start, steps, learning, clock.calls * per_update)
