"""Running statistics recomputed exactly from given states ("precise BatchNorm").

A batch-statistics norm acts in eval mode with running statistics, an exponential average
of training batches; if those went stale (the policy's states drifted from what the
averages saw), recomputing them from states of the policy itself tests whether staleness is
what hurts. Each module's statistics become the exact mean and unbiased variance of its
eval-mode input over the states, the input computed with the modules before it already
recomputed: one pass per module, each pass refreshing every module, so the result does not
depend on the order the network registers its modules in.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from qnorm.errors import QnormError
from qnorm.modes import eval_mode
from qnorm.norms import is_batch_statistics_module


class _Moments:
    """Per-channel sums of a module's inputs (channels: dim 1 of maps, the last dim else)."""

    def __init__(self) -> None:
        self.count, self.total, self.squares = 0, 0.0, 0.0

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().to(torch.float64)
        rows = x.transpose(1, -1).reshape(-1, x.shape[1]) if x.dim() == 4 else x
        rows = rows.reshape(-1, rows.shape[-1])
        self.count += rows.shape[0]
        self.total = self.total + rows.sum(dim=0)
        self.squares = self.squares + (rows * rows).sum(dim=0)

    def mean_and_unbiased_var(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.total / self.count
        var = (self.squares - self.count * mean * mean) / (self.count - 1)
        return mean, var.clamp_min(0.0)


@contextmanager
def _recording_inputs(moments: dict):
    """Each module's forward hands its input to its moments first. Patched on the instance,
    not hooked: qnorm's MLP calls its layers' forward directly, which skips module hooks."""
    for module, moment in moments.items():
        original = module.forward

        def recorded(x, *args, original=original, moment=moment, **kwargs):
            moment.add(x)
            return original(x, *args, **kwargs)

        module.forward = recorded
    try:
        yield
    finally:
        for module in moments:
            del module.forward  # the class's forward again


@torch.no_grad()
def recalibrate_batch_statistics(net: nn.Module, states: torch.Tensor, chunk: int = 1024) -> int:
    """Set every batch-statistics module's running mean and variance to the exact statistics
    of its eval-mode input over ``states`` (a batch ``[N, ...]``); returns how many modules.

    The network's modes are restored; ``num_batches_tracked`` and parameters are untouched.
    """
    modules = [m for m in net.modules() if is_batch_statistics_module(m)]
    if not modules:
        return 0
    if states.shape[0] < 2:
        raise QnormError("recalibrating running statistics needs at least 2 states")
    with eval_mode(net):
        for _ in modules:
            moments = {m: _Moments() for m in modules}
            with _recording_inputs(moments):
                for part in states.split(chunk):
                    net(part)
            for module in modules:
                mean, var = moments[module].mean_and_unbiased_var()
                module.running_mean.copy_(mean)
                module.running_var.copy_(var)
    return len(modules)
