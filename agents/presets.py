"""Per-environment hyperparameter presets, stored as data.

Keys are ``section.field`` of TrainConfig; flags given on the command line override them. Each
set is applied to every norm kind alike (all were tuned for an unnormalized network). Sources:

- CartPole, Acrobot, MountainCar, LunarLander: rl-baselines3-zoo's tuned DQN hyperparameters
  (hyperparams/dqn.yml).
- The five MinAtar games: the MinAtar paper's DQN (Young & Tian 2019, "MinAtar: An
  Atari-Inspired Testbed for Thorough and Reproducible Reinforcement Learning Experiments"), as
  in its reference examples/dqn.py: batch 32, replay 100k, target update every 1000 steps, one
  gradient step every step from 5000 steps on, epsilon 1.0 -> 0.1 over the first 100k frames,
  centered RMSprop (lr 2.5e-4, alpha 0.95, eps 0.01, momentum 0.95), gamma 0.99, Huber loss,
  no Double DQN, no gradient clipping, 5M frames; its conv torso (one 3x3 conv of 16
  channels, 128 hidden units).
- Atari (every ``ALE/`` id, by prefix): rl-baselines3-zoo's ``atari`` DQN entry (10M steps,
  replay 100k, Adam lr 1e-4, batch 32, learning starts 100k, target update every 1000 steps,
  train every 4 steps, exploration 10% down to 0.01) with the Nature DQN conv torso (Mnih et
  al. 2015: 32-64-64 convs, 512 hidden units).
"""

from __future__ import annotations

from qnorm import QnormError

MINATAR_DQN: dict[str, object] = {
    "run.total_timesteps": 5_000_000,
    "run.eval_freq": 50_000,
    "network.conv_preset": "minatar",
    "network.hidden_sizes": (128,),
    "dqn.optimizer": "rmsprop",
    "dqn.learning_rate": 2.5e-4,
    "dqn.batch_size": 32,
    "dqn.buffer_size": 100_000,
    "dqn.learning_starts": 5_000,
    "dqn.gamma": 0.99,
    "dqn.target_update_interval": 1_000,
    "dqn.train_freq": 1,
    "dqn.gradient_steps": 1,
    "dqn.exploration_fraction": 0.02,  # 100k of the 5M frames
    "dqn.exploration_final_eps": 0.1,
    "dqn.double_dqn": False,
    "dqn.loss": "huber",
    "dqn.max_grad_norm": 0.0,  # the reference clips no gradients
}

ATARI_DQN: dict[str, object] = {
    "run.total_timesteps": 10_000_000,
    "run.eval_freq": 250_000,
    "run.eval_episodes": 5,
    "network.conv_preset": "nature",
    "network.hidden_sizes": (512,),
    "dqn.optimizer": "adam",
    "dqn.learning_rate": 1e-4,
    "dqn.batch_size": 32,
    "dqn.buffer_size": 100_000,
    "dqn.learning_starts": 100_000,
    "dqn.gamma": 0.99,
    "dqn.target_update_interval": 1_000,
    "dqn.train_freq": 4,
    "dqn.gradient_steps": 1,
    "dqn.exploration_fraction": 0.1,
    "dqn.exploration_final_eps": 0.01,
    "dqn.double_dqn": False,  # SB3's DQN, which the zoo tunes, is plain DQN
}

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
    "MinAtar/Asterix-v1": MINATAR_DQN,
    "MinAtar/Breakout-v1": MINATAR_DQN,
    "MinAtar/Freeway-v1": MINATAR_DQN,
    "MinAtar/Seaquest-v1": MINATAR_DQN,
    "MinAtar/SpaceInvaders-v1": MINATAR_DQN,
}

# Presets for every id that starts with a prefix; an exact id in PRESETS comes first.
PREFIX_PRESETS: dict[str, dict[str, object]] = {"ALE/": ATARI_DQN}


def preset_for(env_id: str) -> dict[str, object]:
    """The preset for ``env_id`` (empty for envs without one: the dataclass defaults apply)."""
    if env_id in PRESETS:
        return dict(PRESETS[env_id])
    for prefix, preset in PREFIX_PRESETS.items():
        if env_id.startswith(prefix):
            return dict(preset)
    return {}


def tuned_preset_for(env_id: str, settings: dict[str, object]) -> dict[str, object]:
    """The tuned settings for ``env_id`` and the norm variant ``settings`` describe, if any.

    The variant is the study variant (``agents.study.grid.VARIANTS``) whose norm settings
    ``settings`` match exactly, or the one ``run.tuned_preset_from`` names (another
    variant's settings on this run's network); the tuned settings come from
    ``scripts/tune.py --export`` (and any amendment from ``--amend``).
    """
    from agents.study.grid import VARIANTS, variant_of  # the grid builds configs through here
    from agents.tuning.presets import preset_settings, read_presets

    borrowed = str(settings.get("run.tuned_preset_from") or "")
    if borrowed and borrowed not in VARIANTS:
        raise QnormError(
            f"--tuned-preset-from: unknown variant {borrowed!r}; known: {', '.join(VARIANTS)}"
        )
    variant = borrowed or variant_of(settings)
    entry = read_presets().get(env_id, {}).get(variant) if variant else None
    if borrowed and not entry:
        raise QnormError(
            f"no tuned preset for {env_id} {borrowed} to take (--tuned-preset-from); "
            f"tune it first: python scripts/tune.py --env-id {env_id} --variant {borrowed}"
        )
    return preset_settings(entry) if entry else {}
