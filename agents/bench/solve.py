"""Wall-clock seconds until a greedy evaluation solves CartPole-v1, qnorm beside SB3."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass

import gymnasium as gym
import torch

from agents.bench.configs import CONFIGS
from agents.bench.runners import _import_sb3, make_sb3_dqn
from agents.cli import config_from_flags
from agents.training import train

SOLVED = 475.0
EVAL_FREQ = 2_000
EVAL_EPISODES = 10


@dataclass
class SolveTime:
    """How long one seed took to reach the solved threshold (``steps`` is None if never)."""

    library: str
    seed: int
    seconds: float
    steps: int | None


def solve_qnorm(seed: int, threads: int) -> SolveTime:
    """qnorm's CartPole-v1 defaults (the preset, Double DQN on), stopped once solved."""
    with tempfile.TemporaryDirectory() as tmp:
        config = config_from_flags(
            {
                "run.env_id": "CartPole-v1",
                "run.seed": seed,
                "run.run_dir": f"{tmp}/run",
                "run.eval_freq": EVAL_FREQ,
                "run.eval_episodes": EVAL_EPISODES,
                "run.torch_threads": threads,
                "run.progress": False,
                "run.device": "cpu",
            }
        )
        solved: list[int] = []

        def stop(step: int, mean_return: float) -> bool:
            if mean_return >= SOLVED:
                solved.append(step)
            return bool(solved)

        start = time.perf_counter()
        train(config, should_stop=stop)
        seconds = time.perf_counter() - start
    return SolveTime("qnorm", seed, seconds, solved[0] if solved else None)


def solve_sb3(seed: int, threads: int) -> SolveTime:
    """SB3's DQN with the zoo CartPole-v1 settings, stopped by its own EvalCallback."""
    _import_sb3()
    from stable_baselines3.common.callbacks import EvalCallback, StopTrainingOnRewardThreshold

    torch.set_num_threads(threads)
    start = time.perf_counter()
    model = make_sb3_dqn(CONFIGS["zoo"], "none", seed)
    callback = EvalCallback(
        gym.make("CartPole-v1"),
        callback_on_new_best=StopTrainingOnRewardThreshold(SOLVED, verbose=0),
        eval_freq=EVAL_FREQ,
        n_eval_episodes=EVAL_EPISODES,
        deterministic=True,
        verbose=0,
    )
    model.learn(total_timesteps=CONFIGS["zoo"].total_timesteps, callback=callback)
    seconds = time.perf_counter() - start
    solved = callback.best_mean_reward >= SOLVED
    return SolveTime("sb3", seed, seconds, int(model.num_timesteps) if solved else None)
