"""The benchmark configurations: identical work for qnorm and Stable-Baselines3.

Stable-Baselines3's DQN bootstraps from max_a Q_target(s', a) (no Double DQN), so qnorm
runs with ``double_dqn=False`` here: the same forward passes, gradient steps and target
syncs. Neither side evaluates during the timed run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class BenchConfig:
    """Hyperparameters shared by both libraries in one benchmark configuration."""

    name: str
    total_timesteps: int
    learning_rate: float
    batch_size: int
    buffer_size: int
    learning_starts: int
    gamma: float
    target_update_interval: int
    train_freq: int
    gradient_steps: int
    exploration_fraction: float
    exploration_final_eps: float
    hidden_sizes: tuple[int, ...]
    max_grad_norm: float = 10.0
    env_id: str = "CartPole-v1"

    def dqn_kwargs(self) -> dict:
        """The DQN hyperparameters, named as both DQNConfig and SB3's DQN name them."""
        names = (
            "learning_rate",
            "buffer_size",
            "learning_starts",
            "batch_size",
            "gamma",
            "train_freq",
            "gradient_steps",
            "target_update_interval",
            "exploration_fraction",
            "exploration_final_eps",
            "max_grad_norm",
        )
        return {name: getattr(self, name) for name in names}

    def to_dict(self) -> dict:
        """JSON-ready fields."""
        data = asdict(self)
        data["hidden_sizes"] = list(self.hidden_sizes)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> BenchConfig:
        """The config written by ``to_dict``."""
        return cls(**{**data, "hidden_sizes": tuple(data["hidden_sizes"])})


CONFIGS: dict[str, BenchConfig] = {
    # rl-baselines3-zoo's tuned CartPole-v1 DQN: few large update phases.
    "zoo": BenchConfig(
        name="zoo",
        total_timesteps=50_000,
        learning_rate=2.3e-3,
        batch_size=64,
        buffer_size=100_000,
        learning_starts=1_000,
        gamma=0.99,
        target_update_interval=10,
        train_freq=256,
        gradient_steps=128,
        exploration_fraction=0.16,
        exploration_final_eps=0.04,
        hidden_sizes=(256, 256),
    ),
    # CleanRL's dqn.py style: one gradient step every few env steps.
    "per-step": BenchConfig(
        name="per-step",
        total_timesteps=50_000,
        learning_rate=2.5e-4,
        batch_size=128,
        buffer_size=10_000,
        learning_starts=1_000,
        gamma=0.99,
        target_update_interval=500,
        train_freq=10,
        gradient_steps=1,
        exploration_fraction=0.5,
        exploration_final_eps=0.05,
        hidden_sizes=(120, 84),
    ),
}
