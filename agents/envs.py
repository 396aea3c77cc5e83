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


def make_env(env_id: str, **kwargs) -> gym.Env:
    """One checked environment."""
    check_env_id(env_id)
    env = gym.make(env_id, **kwargs)
    try:
        check_spaces(env_id, env.observation_space, env.action_space)
    except QnormError:
        env.close()
        raise
    return env


def make_vector_env(env_id: str, num_envs: int) -> gym.vector.VectorEnv:
    """``num_envs`` synchronous copies that record episode returns and lengths in ``info``."""
    check_env_id(env_id)
    envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync")
    try:
        check_spaces(env_id, envs.single_observation_space, envs.single_action_space)
    except QnormError:
        envs.close()
        raise
    return gym.wrappers.vector.RecordEpisodeStatistics(envs)


def obs_dtype_name(space: gym.spaces.Box) -> str:
    """The numpy dtype name of a Box space's observations."""
    return np.dtype(space.dtype).name
