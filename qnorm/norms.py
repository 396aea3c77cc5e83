"""The registry of normalization kinds: a name maps to a factory ``(num_features) -> nn.Module``.

Every kind normalizes the last (feature) dimension and treats all leading dimensions as
samples, so ``[B, F]`` and ``[B, T, F]`` inputs both work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from qnorm.batchrenorm import BatchRenorm
from qnorm.errors import QnormError, single_sample_message

NormFactory = Callable[[int], nn.Module]


@dataclass(frozen=True)
class NormKind:
    """A registered normalization kind."""

    name: str
    factory: NormFactory | None  # None means "insert no module"
    uses_batch_statistics: bool


_REGISTRY: dict[str, NormKind] = {}


def register_norm(
    name: str, factory: NormFactory | None, *, uses_batch_statistics: bool = False
) -> None:
    """Register a normalization kind under ``name`` (replacing any kind of that name)."""
    _REGISTRY[name] = NormKind(name, factory, uses_batch_statistics)


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


def make_norm(name: str, num_features: int) -> nn.Module | None:
    """A new normalization module of kind ``name``, or None for the kind ``none``."""
    kind = get_norm_kind(name)
    return None if kind.factory is None else kind.factory(num_features)


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


register_norm("none", None)
register_norm("batchnorm", FeatureBatchNorm, uses_batch_statistics=True)
register_norm("layernorm", nn.LayerNorm)
register_norm("rmsnorm", nn.RMSNorm)
register_norm("batchrenorm", BatchRenorm, uses_batch_statistics=True)
