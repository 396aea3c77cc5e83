"""One ``make_env`` for every env family: the id's prefix picks the family's module."""

from __future__ import annotations

import importlib

import gymnasium as gym

from agents.envs import atari, classic, minatar
from agents.envs.checks import check_spaces, missing_dependency
from agents.envs.family import EnvFamily
from qnorm import QnormError

# An id's namespace prefix names its family; every other id is classic.
FAMILY_MODULES = {"MinAtar/": minatar, "ALE/": atari}


def split_env_id(env_id: str) -> tuple[str | None, str]:
    """gymnasium's ``module:Name-v0`` form: the module that registers the env, and its id."""
    module, sep, name = env_id.rpartition(":")
    return (module, name) if sep else (None, env_id)


def env_module(env_id: str) -> str | None:
    """The module an env id asks to import (``my_envs`` in ``my_envs:Maze-v0``), if any."""
    return split_env_id(env_id)[0]


def import_env_module(env_id: str) -> str:
    """Import the module ``env_id`` names, as ``gym.make`` would; return the registered id."""
    module, name = split_env_id(env_id)
    if module is not None:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            raise QnormError(
                f"env id {env_id!r} names module {module!r}, which cannot be imported ({exc})"
            ) from None
    return name


def family_module(env_id: str):
    """The module that registers, makes and wraps ``env_id``'s family."""
    name = split_env_id(env_id)[1]
    for prefix, module in FAMILY_MODULES.items():
        if name.startswith(prefix):
            return module
    return classic


def env_family(env_id: str) -> EnvFamily:
    """The family of ``env_id`` (classic unless its prefix names MinAtar or the ALE)."""
    return family_module(env_id).FAMILY


def env_spec(env_id: str) -> gym.envs.registration.EnvSpec:
    """The registered spec of ``env_id``; a clear error if it is unknown or its extra missing.

    ``module:Name-v0`` imports ``module`` first (gymnasium's syntax for a user's own envs).
    """
    name = import_env_module(env_id)
    family_module(name).register(name)
    try:
        return gym.spec(name)
    except gym.error.Error as exc:
        raise QnormError(f"unknown environment id {env_id!r} ({exc})") from None


def check_env_id(env_id: str) -> None:
    """Raise a clear error if ``env_id`` is unknown or its family's extra is not installed."""
    env_spec(env_id)


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


def _wrapped(env: gym.Env, wrappers) -> gym.Env:
    """``env`` inside ``wrappers``, the first innermost."""
    for wrapper in wrappers:
        env = wrapper(env)
    return env


def make_env(env_id: str, *, render_mode: str | None = None, **kwargs) -> gym.Env:
    """One checked environment, wrapped as its family requires."""
    module = family_module(env_id)
    kwargs = {**module.BASE_KWARGS, **kwargs}
    if render_mode is not None:  # a user env's constructor may take no render_mode at all
        kwargs["render_mode"] = render_mode
    return _checked(
        env_id,
        lambda: _wrapped(gym.make(env_id, **kwargs), module.WRAPPERS),
        lambda env: (env.observation_space, env.action_space),
    )


def make_vector_env(env_id: str, num_envs: int) -> gym.vector.VectorEnv:
    """``num_envs`` synchronous copies that record episode returns and lengths in ``info``."""
    module = family_module(env_id)
    envs = _checked(
        env_id,
        lambda: gym.make_vec(
            env_id,
            num_envs=num_envs,
            vectorization_mode="sync",
            wrappers=module.WRAPPERS,
            **module.BASE_KWARGS,
        ),
        lambda envs: (envs.single_observation_space, envs.single_action_space),
    )
    return gym.wrappers.vector.RecordEpisodeStatistics(envs)
