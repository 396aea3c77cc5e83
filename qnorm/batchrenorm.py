"""Batch Renormalization (Ioffe, 2017) over the feature dimension, as CrossQ uses it.

In train mode it normalizes with the batch statistics and then corrects towards the
running statistics: x_hat = (x - mean_B) / std_B * r + d, with r = std_B / std_run and
d = (mean_B - mean_run) / std_run clipped to [1/rmax, rmax] and [-dmax, dmax] and held
constant for gradients. During the first ``warmup_steps`` train-mode passes r = 1 and
d = 0, which is plain BatchNorm. Eval mode uses the running statistics, like BatchNorm.

The running variance averages the batch's biased variance, as CrossQ's reference layer does
(its statistics come from the same biased estimate it normalizes with), so at a stationary
input r is 1 on average rather than sqrt((n - 1) / n). ``unbiased_running_var=True`` averages
n / (n - 1) times it, torch BatchNorm's choice and qnorm's earlier one (network specs saved
before the option existed keep it).
"""

from __future__ import annotations

import torch
from torch import nn

from qnorm.errors import QnormError, single_sample_message


class BatchRenorm(nn.Module):
    """Batch Renormalization of the last dimension, statistics over all leading dims."""

    uses_batch_statistics = True
    affine = True
    track_running_stats = True

    def __init__(
        self,
        num_features: int,
        momentum: float = 0.01,
        eps: float = 1e-3,
        rmax: float = 3.0,
        dmax: float = 5.0,
        warmup_steps: int = 5_000,
        unbiased_running_var: bool = False,
    ) -> None:
        super().__init__()
        if not 0.0 < momentum <= 1.0 or eps <= 0 or rmax < 1.0 or dmax < 0 or warmup_steps < 0:
            raise QnormError(
                "BatchRenorm needs 0 < momentum <= 1, eps > 0, rmax >= 1, dmax >= 0 and "
                "warmup_steps >= 0"
            )
        self.num_features = num_features
        self.momentum, self.eps = momentum, eps
        self.rmax, self.dmax, self.warmup_steps = rmax, dmax, warmup_steps
        self.unbiased_running_var = unbiased_running_var
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, momentum={self.momentum}, eps={self.eps}, rmax={self.rmax}, "
            f"dmax={self.dmax}, warmup_steps={self.warmup_steps}, "
            f"unbiased_running_var={self.unbiased_running_var}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if not self.training:
            out = (flat - self.running_mean) * torch.rsqrt(self.running_var + self.eps)
            return (out * self.weight + self.bias).reshape(x.shape)
        if flat.shape[0] < 2:
            raise QnormError(single_sample_message("BatchRenorm"))
        var, mean = torch.var_mean(flat, dim=0, correction=0)
        std = torch.sqrt(var + self.eps)
        r, d = self.correction(mean.detach(), std.detach())
        out = (flat - mean) / std * r + d
        self._update_running_stats(mean.detach(), var.detach(), flat.shape[0])
        return (out * self.weight + self.bias).reshape(x.shape)

    def correction(
        self, mean: torch.Tensor, std: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The clipped renormalization terms r and d (1 and 0 during warm-up); no gradient."""
        if int(self.num_batches_tracked) < self.warmup_steps:
            return torch.ones_like(std), torch.zeros_like(mean)
        running_std = torch.sqrt(self.running_var + self.eps)
        r = (std / running_std).clamp(1.0 / self.rmax, self.rmax)
        d = ((mean - self.running_mean) / running_std).clamp(-self.dmax, self.dmax)
        return r, d

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, n: int) -> None:
        self.running_mean.lerp_(mean, self.momentum)
        if self.unbiased_running_var:
            var = var * (n / (n - 1))
        self.running_var.lerp_(var, self.momentum)
        self.num_batches_tracked.add_(1)
