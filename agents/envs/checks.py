"""The checks that an environment suits a DQN with one of qnorm's Q-networks, and their errors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from agents.extras import install_command
from qnorm import QnormError


def network_kind(observation_space: gym.spaces.Space) -> str:
    """``"mlp"`` for a 1-D Box of observations, ``"conv"`` for a 3-D Box (an image)."""
    if isinstance(observation_space, gym.spaces.Box):
        if len(observation_space.shape) == 1:
            return "mlp"
        if len(observation_space.shape) == 3:
            return "conv"
    raise QnormError(
        f"{observation_space} observations fit no Q-network: the MLP needs a 1-D Box and the "
        "conv network a 3-D Box (an image)"
    )


def check_spaces(env_id: str, observation_space, action_space) -> None:
    """Raise a clear error unless actions are Discrete and observations a 1-D or 3-D Box."""
    if not isinstance(action_space, gym.spaces.Discrete):
        raise QnormError(
            f"{env_id} has {type(action_space).__name__} actions; DQN needs Discrete actions"
        )
    try:
        network_kind(observation_space)
    except QnormError as exc:
        raise QnormError(f"{env_id} has {exc}") from None


# Packages gymnasium envs ask for that one of qnorm's extras installs: (name in
# gymnasium's message, package, extra).
PACKAGE_EXTRAS = (("box2d", "Box2D", "box2d"),)


def missing_dependency(env_id: str, exc: gym.error.DependencyNotInstalled) -> QnormError:
    """The error for an env whose optional package (Box2D, MuJoCo, pygame, ...) is missing."""
    message = " ".join(str(exc).split())
    for name, package, extra in PACKAGE_EXTRAS:
        if name in message.lower():
            return missing_extra(env_id, package, extra)
    return QnormError(f"{env_id} needs a package that is not installed: {message}")


def missing_extra(env_id: str, package: str, extra: str) -> QnormError:
    """The error for an env family whose optional package (one of qnorm's extras) is missing."""
    return QnormError(f"{env_id} needs {package}, which is not installed: {install_command(extra)}")


def obs_dtype_name(space: gym.spaces.Box) -> str:
    """The numpy dtype name of a Box space's observations."""
    return np.dtype(space.dtype).name
