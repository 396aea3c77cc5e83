"""A tiny CPU training config shared by the agents tests (a few hundred steps, no evaluation)."""

from __future__ import annotations

from agents.config import TrainConfig


def tiny_config(run_dir, total_timesteps: int, **overrides) -> TrainConfig:
    """A quiet, small CartPole run; ``section__field=value`` overrides any field."""
    config = TrainConfig()
    config.run.run_dir = str(run_dir)
    config.run.total_timesteps = total_timesteps
    config.run.eval_freq = 0
    config.run.progress = False
    config.run.device = "cpu"
    config.network.hidden_sizes = (16,)
    config.dqn.batch_size = 8
    config.dqn.learning_starts = 50
    for key, value in overrides.items():
        section, name = key.split("__")
        setattr(getattr(config, section), name, value)
    return config
