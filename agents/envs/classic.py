"""The classic family: gymnasium's own environments and users' registered ones, unwrapped."""

from __future__ import annotations

from agents.envs.family import EnvFamily

FAMILY = EnvFamily("classic")
BASE_KWARGS: dict[str, object] = {}
WRAPPERS: tuple = ()


def register(env_id: str) -> None:
    """Nothing to register: gymnasium registers its own envs, users theirs."""
