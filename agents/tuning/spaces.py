"""The search space of each study variant, as data.

A parameter is ``("log", low, high)`` (a float searched on a log scale), ``("float", low,
high)`` or ``("choice", [options])``. Options are plain values Optuna can store; a string
``"a/b"`` sets two settings at once (``train_freq`` and ``gradient_steps`` go together, as
in rl-baselines3-zoo's spaces), and ``"64,64"`` is a tuple of layer widths.
"""

from __future__ import annotations

from agents.study.grid import VARIANTS
from qnorm import QnormError, make_norm

# Every variant searches these: the settings that decide a DQN's stability.
COMMON: dict[str, tuple] = {
    "dqn.learning_rate": ("log", 1e-4, 3e-3),
    "dqn.batch_size": ("choice", [32, 64, 128, 256]),
    "dqn.target_update_interval": ("choice", [10, 100, 250, 500, 1000]),
    # -1: as many gradient steps as env steps collected (the zoo's Acrobot and LunarLander)
    "dqn.train_freq/dqn.gradient_steps": (
        "choice",
        ["1/1", "4/1", "4/-1", "16/8", "64/32", "256/128"],
    ),
    "dqn.lr_schedule": ("choice", ["constant", "linear"]),  # linear: down to 0 at the end
    "dqn.exploration_fraction": ("float", 0.05, 0.5),
    "dqn.exploration_final_eps": ("float", 0.01, 0.1),
    "network.hidden_sizes": ("choice", ["64,64", "128,128", "256,256"]),
    # rewards summed per target (agents/n_step.py): added after the CartPole-v1 tunings,
    # which searched without it, once 3-step returns held BatchNorm's policies there
    "dqn.n_step": ("choice", [1, 3, 5]),
}
# Batch-statistics norms also search Adam's beta1 (CrossQ runs BatchNorm with 0.5) and the
# momentum of their running statistics (torch's BatchNorm default 0.1, CrossQ's 0.01).
BATCH_STATISTICS: dict[str, tuple] = {
    "dqn.adam_beta1": ("choice", [0.5, 0.9]),
    "network.norm_momentum": ("choice", [0.01, 0.03, 0.1, 0.3]),
}


def uses_batch_statistics(variant: str) -> bool:
    """Whether a study variant normalizes with batch statistics (BatchNorm, BatchRenorm)."""
    return str(VARIANTS[variant].get("network.norm", "none")).startswith("batch")


def space_for(variant: str) -> dict[str, tuple]:
    """The search space of ``variant``."""
    if variant not in VARIANTS:
        raise QnormError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    return {**COMMON, **(BATCH_STATISTICS if uses_batch_statistics(variant) else {})}


def sample(trial, space: dict[str, tuple]) -> dict[str, object]:
    """Draw one point of ``space`` from an Optuna trial, as ``section.field`` settings."""
    settings: dict[str, object] = {}
    for name, (kind, *args) in space.items():
        if kind == "log":
            value = trial.suggest_float(name, *args, log=True)
        elif kind == "float":
            value = trial.suggest_float(name, *args)
        else:
            value = trial.suggest_categorical(name, args[0])
        settings.update(decode(name, value))
    return settings


def decode(name: str, value: object) -> dict[str, object]:
    """A sampled value as the settings it stands for."""
    if "/" in name:
        keys, parts = name.split("/"), str(value).split("/")
        return {key: int(part) for key, part in zip(keys, parts, strict=True)}
    if name == "network.hidden_sizes":
        return {name: tuple(int(width) for width in str(value).split(","))}
    return {name: value}


def decode_params(params: dict[str, object]) -> dict[str, object]:
    """A finished trial's ``params`` as settings."""
    settings: dict[str, object] = {}
    for name, value in params.items():
        settings.update(decode(name, value))
    return settings


def encode(name: str, config) -> object:
    """The value a config holds for the space parameter ``name`` (the inverse of ``decode``)."""
    values = [getattr(getattr(config, section), field) for section, field in _keys(name)]
    if name == "network.hidden_sizes":
        return ",".join(str(width) for width in values[0])
    if name == "network.norm_momentum" and values[0] == 0:  # 0: the norm kind's own default
        return make_norm(config.network.norm, 1).momentum
    return "/".join(str(value) for value in values) if "/" in name else values[0]


def _keys(name: str) -> list[tuple[str, str]]:
    return [tuple(key.split(".")) for key in name.split("/")]


def point_of(config, space: dict[str, tuple]) -> dict[str, object] | None:
    """``config``'s settings as a point of ``space`` (Optuna params), or None outside it."""
    params: dict[str, object] = {}
    for name, (kind, *args) in space.items():
        value = encode(name, config)
        inside = args[0] <= value <= args[1] if kind in ("log", "float") else value in args[0]
        if not inside:
            return None
        params[name] = value
    return params
