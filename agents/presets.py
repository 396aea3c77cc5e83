"""Per-environment hyperparameter presets, stored as data.

The DQN settings are rl-baselines3-zoo's tuned DQN hyperparameters for each env (tuned for
an unnormalized network); they are applied to every norm kind alike. Keys are
``section.field`` of TrainConfig. Flags given on the command line override them.
"""

from __future__ import annotations

PRESETS: dict[str, dict[str, object]] = {
    "CartPole-v1": {
        "run.total_timesteps": 50_000,
        "run.eval_freq": 5_000,
        "network.hidden_sizes": (256, 256),
        "dqn.learning_rate": 2.3e-3,
        "dqn.batch_size": 64,
        "dqn.buffer_size": 100_000,
        "dqn.learning_starts": 1_000,
        "dqn.gamma": 0.99,
        "dqn.target_update_interval": 10,
        "dqn.train_freq": 256,
        "dqn.gradient_steps": 128,
        "dqn.exploration_fraction": 0.16,
        "dqn.exploration_final_eps": 0.04,
    },
    "Acrobot-v1": {
        "run.total_timesteps": 100_000,
        "run.eval_freq": 10_000,
        "network.hidden_sizes": (256, 256),
        "dqn.learning_rate": 6.3e-4,
        "dqn.batch_size": 128,
        "dqn.buffer_size": 50_000,
        "dqn.learning_starts": 0,
        "dqn.gamma": 0.99,
        "dqn.target_update_interval": 250,
        "dqn.train_freq": 4,
        "dqn.gradient_steps": -1,
        "dqn.exploration_fraction": 0.12,
        "dqn.exploration_final_eps": 0.1,
    },
    "MountainCar-v0": {
        "run.total_timesteps": 120_000,
        "run.eval_freq": 10_000,
        "network.hidden_sizes": (256, 256),
        "dqn.learning_rate": 4e-3,
        "dqn.batch_size": 128,
        "dqn.buffer_size": 10_000,
        "dqn.learning_starts": 1_000,
        "dqn.gamma": 0.98,
        "dqn.target_update_interval": 600,
        "dqn.train_freq": 16,
        "dqn.gradient_steps": 8,
        "dqn.exploration_fraction": 0.2,
        "dqn.exploration_final_eps": 0.07,
    },
    "LunarLander-v3": {
        "run.total_timesteps": 100_000,
        "run.eval_freq": 10_000,
        "network.hidden_sizes": (256, 256),
        "dqn.learning_rate": 6.3e-4,
        "dqn.batch_size": 128,
        "dqn.buffer_size": 50_000,
        "dqn.learning_starts": 0,
        "dqn.gamma": 0.99,
        "dqn.target_update_interval": 250,
        "dqn.train_freq": 4,
        "dqn.gradient_steps": -1,
        "dqn.exploration_fraction": 0.12,
        "dqn.exploration_final_eps": 0.1,
    },
}


def preset_for(env_id: str) -> dict[str, object]:
    """The preset for ``env_id`` (empty for envs without one: the dataclass defaults apply)."""
    return dict(PRESETS.get(env_id, {}))
