"""Target-network creation and synchronisation; norm running statistics travel too."""

from __future__ import annotations

import copy

import torch
from torch import nn

from qnorm.errors import QnormError


def make_target(online: nn.Module) -> nn.Module:
    """A frozen eval-mode copy of ``online`` to serve as its target network."""
    target = copy.deepcopy(online)
    target.requires_grad_(False)
    return target.eval()


def _paired(target: nn.Module, online: nn.Module, kind: str):
    """Matching tensors of ``kind`` ("parameters" or "buffers") of two same-shaped networks."""
    target_named = list(getattr(target, f"named_{kind}")())
    online_named = list(getattr(online, f"named_{kind}")())
    target_layout = [(name, t.shape) for name, t in target_named]
    online_layout = [(name, o.shape) for name, o in online_named]
    if target_layout != online_layout:
        raise QnormError(
            f"target and online networks have different {kind}; build both from one spec"
        )
    return [t for _, t in target_named], [o for _, o in online_named]


@torch.no_grad()
def hard_update(target: nn.Module, online: nn.Module) -> None:
    """Copy parameters and buffers (running statistics, counters) from online to target."""
    # Pair both kinds before copying, so a mismatch leaves the target untouched.
    pairs = [_paired(target, online, kind) for kind in ("parameters", "buffers")]
    for targets, onlines in pairs:
        for t, o in zip(targets, onlines, strict=True):
            t.copy_(o)
    target.eval()


@torch.no_grad()
def soft_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """Polyak-average parameters by ``tau``; copy buffers (running statistics) outright."""
    if not 0.0 < tau <= 1.0:
        raise QnormError(f"tau must be in (0, 1], got {tau}")
    # Pair both kinds before writing, so a mismatch leaves the target untouched.
    params = _paired(target, online, "parameters")
    buffers = _paired(target, online, "buffers")
    for t, o in zip(*params, strict=True):
        t.lerp_(o, tau)
    for t, o in zip(*buffers, strict=True):
        t.copy_(o)
    target.eval()
