"""Fold eval-mode BatchNorm into the neighbouring Linear for cheaper inference."""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch import nn

from qnorm.batchrenorm import BatchRenorm
from qnorm.networks import DuelingHead


def _affine_of(norm: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as ``y = scale * x + shift`` per feature."""
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.affine:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale
    if norm.affine:
        shift = shift + norm.bias
    return scale, shift


def _new_linear_like(linear: nn.Linear) -> nn.Linear:
    """A Linear with a bias, of ``linear``'s sizes, on its device and in its dtype."""
    weight = linear.weight
    return nn.Linear(
        linear.in_features, linear.out_features, bias=True, device=weight.device, dtype=weight.dtype
    )


def _linear_then_norm(linear: nn.Linear, norm: nn.BatchNorm1d) -> nn.Linear:
    """One Linear equal to ``norm(linear(x))`` in eval mode."""
    scale, shift = _affine_of(norm)
    folded = _new_linear_like(linear)
    folded.weight.copy_(linear.weight * scale[:, None])
    bias = linear.bias if linear.bias is not None else torch.zeros_like(shift)
    folded.bias.copy_(bias * scale + shift)
    return folded


def _norm_then_linear(norm: nn.BatchNorm1d, linear: nn.Linear) -> nn.Linear:
    """One Linear equal to ``linear(norm(x))`` in eval mode."""
    scale, shift = _affine_of(norm)
    folded = _new_linear_like(linear)
    folded.weight.copy_(linear.weight * scale[None, :])
    bias = linear.bias if linear.bias is not None else linear.weight.new_zeros(linear.out_features)
    folded.bias.copy_(bias + linear.weight @ shift)
    return folded


def _is_foldable_norm(module: nn.Module) -> bool:
    # BatchRenorm is, in eval mode, the same affine map of its running statistics.
    batchnorm = isinstance(module, nn.BatchNorm1d) and module.track_running_stats
    return batchnorm or isinstance(module, BatchRenorm)


def _fold_sequential(seq: nn.Sequential) -> nn.Sequential:
    kept: list[tuple[str, nn.Module]] = []
    for name, module in seq.named_children():
        last = kept[-1][1] if kept else None
        if isinstance(last, nn.Linear) and _is_foldable_norm(module):
            kept[-1] = (kept[-1][0], _linear_then_norm(last, module))
        elif _is_foldable_norm(last) and isinstance(module, nn.Linear):
            kept[-1] = (name, _norm_then_linear(last, module))
        else:
            kept.append((name, module))
    return nn.Sequential(OrderedDict(kept))


@torch.no_grad()
def fold_batchnorm(net: nn.Module) -> nn.Module:
    """An inference-only copy of ``net`` with each BatchNorm next to a Linear folded into it.

    A BatchNorm directly after a Linear folds into that Linear; one directly before a Linear
    (placement ``after`` the activation, or a norm on the input) folds into the next one.
    The copy is in eval mode, needs no gradients, and matches ``net`` in eval mode.
    """
    folded = copy.deepcopy(net).eval()
    _fold_children(folded)
    if isinstance(folded, nn.Sequential):
        folded = _fold_sequential(folded)
    _fold_into_dueling_head(folded)
    folded.requires_grad_(False)
    return folded.eval()


def _fold_children(parent: nn.Module) -> None:
    """Fold every Sequential below ``parent`` in place, innermost first."""
    for name, child in list(parent.named_children()):
        _fold_children(child)
        if isinstance(child, nn.Sequential):
            setattr(parent, name, _fold_sequential(child))


def _fold_into_dueling_head(net: nn.Module) -> None:
    """A BatchNorm ending a QNetwork's body folds into both Linears of its dueling head."""
    head, layers = getattr(net, "head", None), getattr(net, "layers", None)
    if not isinstance(head, DuelingHead) or not isinstance(layers, nn.Sequential) or not layers:
        return
    name, last = list(layers.named_children())[-1]
    if _is_foldable_norm(last):
        head.value = _norm_then_linear(last, head.value)
        head.advantage = _norm_then_linear(last, head.advantage)
        delattr(layers, name)
