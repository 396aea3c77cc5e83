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

import torch


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
