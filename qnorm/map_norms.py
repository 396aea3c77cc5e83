"""The feature-map forms of the norm kinds, for conv activations ``[N, C, H, W]``.

Batch-statistics kinds normalize each channel over N, H and W (BatchNorm2d semantics);
per-sample kinds normalize each sample over (C, H, W), with a per-channel affine.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from qnorm.batchrenorm import BatchRenorm
from qnorm.errors import QnormError, check_groups, single_sample_message


class MapBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d that refuses a train-mode batch of one sample, like FeatureBatchNorm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] < 2:
            raise QnormError(single_sample_message("BatchNorm"))
        return super().forward(x)


class MapBatchRenorm(BatchRenorm):
    """Batch Renormalization of each channel of a feature map, statistics over N, H and W."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Checked here: the rows BatchRenorm counts are N * H * W, not the N samples.
        if self.training and x.shape[0] < 2:
            raise QnormError(single_sample_message("BatchRenorm"))
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)


class MapLayerNorm(nn.GroupNorm):
    """LayerNorm of each sample over (C, H, W), with a per-channel affine."""

    def __init__(self, num_channels: int, eps: float = 1e-5) -> None:
        super().__init__(1, num_channels, eps)


class MapGroupNorm(nn.GroupNorm):
    """GroupNorm of a feature map: each sample over each group of channels and H, W."""

    def __init__(self, num_channels: int, groups: int = 8, eps: float = 1e-5) -> None:
        check_groups(num_channels, groups)
        super().__init__(groups, num_channels, eps)


class MapRMSNorm(nn.Module):
    """RMSNorm of each sample over (C, H, W), with a per-channel gain."""

    def __init__(self, num_channels: int, eps: float | None = None) -> None:
        super().__init__()
        self.num_channels, self.eps = num_channels, eps
        self.weight = nn.Parameter(torch.ones(num_channels))

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # eps None means the dtype's machine epsilon, as nn.RMSNorm does.
        y = F.rms_norm(x, x.shape[-3:], eps=self.eps)
        return y * self.weight[:, None, None]


def is_channel_first_norm(module: nn.Module) -> bool:
    """Whether ``module`` keeps running statistics per channel of a ``[N, C, ...]`` map."""
    return isinstance(module, (nn.BatchNorm2d, MapBatchRenorm))
