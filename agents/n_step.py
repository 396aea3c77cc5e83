"""N-step returns, read from replay when a minibatch is sampled.

For a sampled transition t the target becomes

    r_t + gamma r_{t+1} + ... + gamma^(m-1) r_{t+m-1} + gamma^m (1 - terminated) Q(s_{t+m}, .)

with m = n, or fewer where the episode ends first (its terminated or truncated transition
is the last one summed) or where the env's next transition is not stored yet. Every sampled
row therefore gives a valid target; no transition waits to be completed before storage.
The replay buffers only say which stored transition follows which in its episode
(``successor``): none follows one that ended its episode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from qnorm import QnormError


class NStepReturns(NamedTuple):
    """The summed rewards, where each return stops, and the discount of its bootstrap."""

    rewards: torch.Tensor  # float32, the discounted sum of m rewards
    last: torch.Tensor  # int64 row of the m-th transition: its next_obs and terminated close it
    discounts: torch.Tensor  # float32, gamma ** m


def n_step_returns(
    first: torch.Tensor,
    successor: Callable[[torch.Tensor], torch.Tensor],
    rewards: torch.Tensor,
    n: int,
    gamma: float,
) -> NStepReturns:
    """Returns of up to ``n`` steps from the rows ``first`` (any shape).

    ``successor(rows)`` gives the row of the next transition of the same episode, or -1
    where the row ended its episode or the next transition is not stored.
    """
    total = rewards[first].to(torch.float32)
    last = first
    steps = torch.ones_like(total)
    going = torch.ones_like(first, dtype=torch.bool)
    for k in range(1, n):
        following = successor(last)
        going = going & (following >= 0)
        last = torch.where(going, following, last)
        total = total + torch.where(going, gamma**k * rewards[last], 0.0)
        steps = steps + going
    return NStepReturns(total, last, torch.full_like(steps, gamma).pow(steps))


class NextRows:
    """For a circular transition store: the row of each row's next transition in its episode.

    -1 where it is not stored yet or the row ended its episode. Each env's newest row waits
    for the env's next add, which links it to the row that add fills.
    """

    def __init__(self, capacity: int, num_envs: int, device: torch.device) -> None:
        self.capacity, self.num_envs = capacity, num_envs
        self.rows = torch.full((capacity,), -1, dtype=torch.int64, device=device)
        self._host = self.rows.numpy() if device.type == "cpu" else None
        self._newest = np.full(num_envs, -1, dtype=np.int64)  # -1: next add starts an episode
        self._all_envs = np.arange(num_envs, dtype=np.int64)

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        """The successor of each of ``rows`` (``n_step_returns``'s ``successor``)."""
        return self.rows[rows]

    def add(self, position: int, n: int, terminated, truncated, env_ids) -> None:
        """Link the envs' newest rows to the ``n`` rows an add fills from ``position``."""
        ids = self._env_ids(n, env_ids)
        rows = (position + self._all_envs[:n]) % self.capacity
        previous = self._newest[ids]
        # a previous row this add overwrites (a buffer smaller than one step) links nowhere
        kept = (previous >= 0) & ((previous - position) % self.capacity >= n)
        self._put(rows, np.full(n, -1, dtype=np.int64))
        self._put(previous[kept], rows[kept])
        ended = terminated.astype(bool) | truncated.astype(bool)
        self._newest[ids] = np.where(ended, -1, rows)

    def _env_ids(self, n: int, env_ids) -> np.ndarray:
        """Which env's stream each of ``n`` added rows continues (default: env i for row i)."""
        if n > self.num_envs:
            raise QnormError(
                f"cannot add {n} transitions at once to an n-step buffer of {self.num_envs} "
                "env streams (one row per env)"
            )
        if env_ids is None:
            return self._all_envs[:n]
        ids = np.asarray(env_ids, dtype=np.int64).reshape(-1)
        if ids.shape != (n,) or ids.min() < 0 or ids.max() >= self.num_envs:
            raise QnormError(f"env_ids must be {n} indices in [0, {self.num_envs})")
        return ids

    def _put(self, rows: np.ndarray, values: np.ndarray) -> None:
        if self._host is not None:  # CPU: numpy writes into the tensor's memory
            self._host[rows] = values
        else:
            device = self.rows.device
            self.rows[torch.from_numpy(rows).to(device)] = torch.from_numpy(values).to(device)

    def end_episodes(self) -> None:
        """The envs start fresh episodes: no stored row links to what they add next."""
        self._newest[:] = -1

    def newest(self) -> list[int]:
        """Each env's newest row (-1: its next add starts an episode), for a snapshot."""
        return self._newest.tolist()

    def load_state(self, links: torch.Tensor | None, newest: list[int] | None, size: int) -> None:
        """Restore the first ``size`` rows' links and ``newest``; without them nothing links."""
        self.rows.fill_(-1)
        self._newest[:] = -1
        if links is None or newest is None:
            return
        if tuple(links.shape) != (size,) or len(newest) != self.num_envs:
            raise QnormError("the snapshot's n-step links do not fit this replay buffer")
        self.rows[:size] = links.to(self.rows.device)
        self._newest[:] = newest
