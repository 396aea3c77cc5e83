"""A conv DQN learns from pixels: a short MinAtar Breakout run must clearly beat random play."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents import load_policy, run_episodes, train
from agents.cli import config_from_flags
from agents.envs import make_env

pytest.importorskip("minatar", reason="needs the minatar extra: pip install -e '.[minatar]'")

ENV_ID = "MinAtar/Breakout-v1"
EPISODES = 20
EVAL_SEED = 123


def random_mean_return(episodes: int, seed: int) -> float:
    """Mean return of uniformly random actions over the episodes the agent is scored on."""
    env = make_env(ENV_ID)
    rng = np.random.default_rng(seed)
    total = 0.0
    for episode in range(episodes):
        env.reset(seed=seed if episode == 0 else None)
        done = False
        while not done:
            _, reward, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
            total += float(reward)
            done = terminated or truncated
    env.close()
    return total / episodes


@pytest.mark.slow
def test_short_minatar_run_beats_random_play(tmp_path):
    torch.set_num_threads(1)
    # The MinAtar preset (network, optimizer, batch, replay), shortened: 30k steps with an
    # update every 4 steps instead of 5M steps with one every step.
    config = config_from_flags(
        {
            "run.env_id": ENV_ID,
            "run.seed": 0,
            "run.run_dir": str(tmp_path / "run"),
            "run.progress": False,
            "run.total_timesteps": 30_000,
            "run.eval_freq": 0,
            "dqn.learning_starts": 2_000,
            "dqn.exploration_fraction": 0.3,
            "dqn.train_freq": 4,
        }
    )
    result = train(config)
    policy_net = load_policy(result.final_checkpoint).network  # from the checkpoint alone
    env = make_env(ENV_ID)
    learned = run_episodes(policy_net, env, EPISODES, EVAL_SEED).mean_return
    env.close()
    random = random_mean_return(EPISODES, EVAL_SEED)
    assert random < 1.0  # the game is not trivially won by pressing buttons
    assert learned >= max(2.0, 4 * random), (learned, random)
