"""The NaN guard: non-finite numbers stop a run with one clear error before they spread.

An env's non-finite observation or reward is caught on the step it arrives, before it is
stored (so before any gradient step sees it). A non-finite TD loss or Q-value is caught at
the end of the update phase it appears in, and no checkpoint is ever written from a network
with a non-finite parameter: the last good one stays as it was, and the error names it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from qnorm import QnormError


class FiniteGuard:
    """Checks what enters and leaves training for NaN and infinity."""

    def __init__(self, env_id: str) -> None:
        self.env_id = env_id
        self.last_good: Path | None = None  # the newest checkpoint written from finite weights
        self.last_snapshot: tuple[Path, int] | None = None  # the newest snapshot, and its step

    def check_env(self, obs: np.ndarray, rewards: np.ndarray, step: int) -> None:
        """Raise if a step of the env returned a non-finite observation or reward."""
        if not np.isfinite(rewards).all():
            self._env_error("reward", rewards, step)
        # Integer and boolean frames cannot hold NaN; only float observations are checked.
        if obs.dtype.kind == "f" and not np.isfinite(obs).all():
            self._env_error("observation", obs.reshape(len(obs), -1), step)

    def _env_error(self, what: str, values: np.ndarray, step: int) -> None:
        bad = ~np.isfinite(values)
        index = int(np.flatnonzero(bad.reshape(len(values), -1).any(axis=1))[0])
        raise QnormError(
            f"{self.env_id} returned a non-finite {what} at step {step} (env {index}); "
            f"nothing from that step was stored or learned from{self.last_good_text()}"
        )

    def check_update(self, td_loss: torch.Tensor, step: int) -> None:
        """Raise if an update's TD loss is not finite (one host sync of one number).

        A non-finite Q(s, a) or target makes the Huber or squared loss non-finite too, so the
        loss alone tells for both.
        """
        if not math.isfinite(td_loss.item()):
            raise QnormError(
                f"training diverged at step {step}: the TD loss or the Q-values are not "
                f"finite{self.last_good_text()}"
            )

    def check_parameters(self, net: nn.Module, step: int, what: str = "checkpoint") -> None:
        """Raise, instead of saving a ``what``, if a parameter or norm buffer is not finite."""
        tensors = [t for t in (*net.parameters(), *net.buffers()) if t.is_floating_point()]
        if not all(bool(torch.isfinite(t).all()) for t in tensors):
            raise QnormError(
                f"training diverged by step {step}: the network has non-finite weights, so "
                f"no {what} was written from it{self.last_good_text()}"
            )

    def last_good_text(self) -> str:
        """The end of an error sentence naming the last good checkpoint and snapshot."""
        text = (
            " (no checkpoint was written before)"
            if self.last_good is None
            else f"; the last good checkpoint is {self.last_good}"
        )
        if self.last_snapshot is not None:
            where, step = self.last_snapshot
            text += f", the last good snapshot {where} (step {step:,})"
        return text
