"""Environment creation and the checks that an env suits a DQN with an MLP Q-network."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from qnorm import QnormError


def check_env_id(env_id: str) -> None:
    """Raise a clear error if ``env_id`` is not a registered gymnasium environment."""
    try:
        gym.spec(env_id)
    except gym.error.Error as exc:
        raise QnormError(f"unknown environment id {env_id!r} ({exc})") from None


def check_spaces(env_id: str, observation_space, action_space) -> None:
    """Raise a clear error unless observations are a 1-D Box and actions are Discrete."""
    if not isinstance(action_space, gym.spaces.Discrete):
        raise QnormError(
            f"{env_id} has {type(action_space).__name__} actions; DQN needs Discrete actions"
        )
    if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 1:
        raise QnormError(
            f"{env_id} has {observation_space} observations; the MLP Q-network needs a 1-D Box"
        )


def missing_dependency(env_id: str, exc: gym.error.DependencyNotInstalled) -> QnormError:
    """The error for an env whose optional package (Box2D, MuJoCo, pygame, ...) is missing."""
    return QnormError(
        f"{env_id} needs a package that is not installed: {' '.join(str(exc).split())}"
    )


def _checked(env_id: str, make, spaces):
    """``make()`` with gymnasium's errors turned into ours, then its spaces checked."""
    check_env_id(env_id)
    try:
        env = make()
    except gym.error.DependencyNotInstalled as exc:
        raise missing_dependency(env_id, exc) from None
    try:
        check_spaces(env_id, *spaces(env))
    except QnormError:
        env.close()
        raise
    return env


def make_env(env_id: str, **kwargs) -> gym.Env:
    """One checked environment."""
    return _checked(
        env_id,
        lambda: gym.make(env_id, **kwargs),
        lambda env: (env.observation_space, env.action_space),
    )


def make_vector_env(env_id: str, num_envs: int) -> gym.vector.VectorEnv:
    """``num_envs`` synchronous copies that record episode returns and lengths in ``info``."""
    envs = _checked(
        env_id,
        lambda: gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync"),
        lambda envs: (envs.single_observation_space, envs.single_action_space),
    )
    return gym.wrappers.vector.RecordEpisodeStatistics(envs)


def obs_dtype_name(space: gym.spaces.Box) -> str:
    """The numpy dtype name of a Box space's observations."""
    return np.dtype(space.dtype).name
