"""Environments for DQN: one ``make_env`` over the classic, MinAtar and Atari families.

Each family lives in its own module (``classic``, ``minatar``, ``atari``) with its registration,
base-env arguments and wrappers; ``making`` dispatches on the id's prefix. ``learning_signal``
holds what changes training transitions only (reward clipping, life-loss terminals).
"""

from agents.envs.checks import (
    check_spaces,
    missing_dependency,
    missing_extra,
    network_kind,
    obs_dtype_name,
)
from agents.envs.family import EnvFamily
from agents.envs.learning_signal import LearningSignal
from agents.envs.making import (
    check_env_id,
    env_family,
    env_module,
    env_spec,
    make_env,
    make_vector_env,
)

__all__ = [
    "EnvFamily",
    "LearningSignal",
    "check_env_id",
    "check_spaces",
    "env_family",
    "env_module",
    "env_spec",
    "make_env",
    "make_vector_env",
    "missing_dependency",
    "missing_extra",
    "network_kind",
    "obs_dtype_name",
]
