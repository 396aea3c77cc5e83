"""The registry of normalization kinds: a name maps to a factory ``(num_features) -> nn.Module``.

Every kind normalizes the last (feature) dimension and treats all leading dimensions as
samples, so ``[B, F]`` and ``[B, T, F]`` inputs both work. A kind's map factory builds its
form for conv feature maps ``[N, C, H, W]`` (see ``qnorm.map_norms``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from qnorm.batchrenorm import BatchRenorm
from qnorm.errors import QnormError, check_groups, single_sample_message
from qnorm.map_norms import MapBatchNorm, MapBatchRenorm, MapGroupNorm, MapLayerNorm, MapRMSNorm

NormFactory = Callable[..., nn.Module]


@dataclass(frozen=True)
class NormKind:
    """A registered normalization kind."""

    name: str
    factory: NormFactory | None  # None means "insert no module"
    uses_batch_statistics: bool
    map_factory: NormFactory | None = None  # the form for feature maps; None: vectors only
    takes_groups: bool = False  # the factories take ``groups=``


_REGISTRY: dict[str, NormKind] = {}


def register_norm(
    name: str,
    factory: NormFactory | None,
    *,
    map_factory: NormFactory | None = None,
    uses_batch_statistics: bool = False,
    takes_groups: bool = False,
) -> None:
    """Register a normalization kind under ``name`` (replacing any kind of that name)."""
    _REGISTRY[name] = NormKind(name, factory, uses_batch_statistics, map_factory, takes_groups)


def norm_names() -> tuple[str, ...]:
    """The names of all registered normalization kinds."""
    return tuple(_REGISTRY)


def get_norm_kind(name: str) -> NormKind:
    """The registered kind called ``name``; a clear error for an unknown name."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise QnormError(f"unknown norm {name!r}; known norms are: {known}") from None


def check_map_form(name: str) -> None:
    """Raise a QnormError if the kind ``name`` cannot normalize feature maps."""
    kind = get_norm_kind(name)
    if kind.factory is not None and kind.map_factory is None:
        raise QnormError(
            f"norm {name!r} has no form for feature maps; register it with a map_factory "
            "or normalize only the fully connected head"
        )


def make_norm(
    name: str,
    num_features: int,
    *,
    feature_maps: bool = False,
    groups: int = 8,
    momentum: float | None = None,
    options: dict | None = None,
) -> nn.Module | None:
    """A new normalization module of kind ``name``, or None for the kind ``none``.

    With ``feature_maps`` it is the kind's form for ``[N, C, H, W]`` maps of ``num_features``
    channels; ``groups`` goes only to kinds registered with ``takes_groups``, and
    ``momentum`` (the running statistics' update rate; None: the kind's own default) only to
    batch-statistics kinds; ``options`` are further keyword arguments of the kind's module
    (BatchRenorm's rmax, dmax, warmup_steps, unbiased_running_var).
    """
    kind = get_norm_kind(name)
    if kind.factory is None:
        return None
    if feature_maps:
        check_map_form(name)
    factory = kind.map_factory if feature_maps else kind.factory
    kwargs: dict[str, object] = {"groups": groups} if kind.takes_groups else {}
    if momentum is not None and kind.uses_batch_statistics:
        kwargs["momentum"] = momentum
    return factory(num_features, **kwargs, **(options or {}))


def is_batch_statistics_module(module: nn.Module) -> bool:
    """Whether ``module`` normalizes with the statistics of its train-mode batch."""
    return isinstance(module, nn.modules.batchnorm._BatchNorm) or bool(
        getattr(module, "uses_batch_statistics", False)
    )


class FeatureBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the last dimension, with statistics over all leading dimensions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = x.shape[-1]
        flat = x.reshape(-1, features)
        if self.training and flat.shape[0] < 2:
            raise QnormError(single_sample_message("BatchNorm"))
        return super().forward(flat).reshape(x.shape)


class FeatureGroupNorm(nn.GroupNorm):
    """GroupNorm of the last dimension: each row over each group of its features."""

    def __init__(self, num_features: int, groups: int = 8, eps: float = 1e-5) -> None:
        check_groups(num_features, groups)
        super().__init__(groups, num_features, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.num_channels)
        out = F.group_norm(flat, self.num_groups, self.weight, self.bias, self.eps)
        return out.reshape(x.shape)


register_norm("none", None)
register_norm("batchnorm", FeatureBatchNorm, map_factory=MapBatchNorm, uses_batch_statistics=True)
register_norm("layernorm", nn.LayerNorm, map_factory=MapLayerNorm)
register_norm("rmsnorm", nn.RMSNorm, map_factory=MapRMSNorm)
register_norm("batchrenorm", BatchRenorm, map_factory=MapBatchRenorm, uses_batch_statistics=True)
register_norm("groupnorm", FeatureGroupNorm, map_factory=MapGroupNorm, takes_groups=True)
