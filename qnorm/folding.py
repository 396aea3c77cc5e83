"""Fold eval-mode BatchNorm into the neighbouring Linear or Conv2d for cheaper inference."""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch import nn

from qnorm.batchrenorm import BatchRenorm
from qnorm.map_norms import MapBatchRenorm
from qnorm.networks import DuelingHead

Layer = nn.Linear | nn.Conv2d


def _affine_of(norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as ``y = scale * x + shift`` per feature (or channel)."""
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.affine:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale
    if norm.affine:
        shift = shift + norm.bias
    return scale, shift


def _is_vector_norm(module: nn.Module | None) -> bool:
    """A foldable norm of the last dim (BatchRenorm is, in eval mode, the same affine map)."""
    if isinstance(module, MapBatchRenorm):
        return False
    batchnorm = isinstance(module, nn.BatchNorm1d) and module.track_running_stats
    return batchnorm or isinstance(module, BatchRenorm)


def _is_map_norm(module: nn.Module | None) -> bool:
    """A foldable norm of each channel of ``[N, C, H, W]`` maps."""
    batchnorm = isinstance(module, nn.BatchNorm2d) and module.track_running_stats
    return batchnorm or isinstance(module, MapBatchRenorm)


def _with_weight_and_bias(layer: Layer, weight: torch.Tensor, bias: torch.Tensor) -> Layer:
    """A copy of ``layer`` with ``weight`` and a bias of ``bias``."""
    folded = copy.deepcopy(layer)
    folded.weight = nn.Parameter(weight)
    folded.bias = nn.Parameter(bias)
    return folded


def _layer_then_norm(layer: Layer, norm: nn.Module) -> Layer:
    """One Linear or Conv2d equal to ``norm(layer(x))`` in eval mode."""
    scale, shift = _affine_of(norm)
    weight = layer.weight * scale.reshape(-1, *[1] * (layer.weight.dim() - 1))
    bias = layer.bias if layer.bias is not None else torch.zeros_like(shift)
    return _with_weight_and_bias(layer, weight, bias * scale + shift)


def _norm_then_linear(norm: nn.Module, linear: nn.Linear) -> nn.Linear:
    """One Linear equal to ``linear(flatten(norm(x)))`` in eval mode.

    For a map norm before a Flatten, each channel's scale and shift cover its H * W
    consecutive inputs of the Linear.
    """
    scale, shift = _affine_of(norm)
    repeats = linear.in_features // scale.numel()
    scale, shift = scale.repeat_interleave(repeats), shift.repeat_interleave(repeats)
    bias = linear.bias if linear.bias is not None else linear.weight.new_zeros(linear.out_features)
    return _with_weight_and_bias(linear, linear.weight * scale, bias + linear.weight @ shift)


def _norm_then_conv(norm: nn.Module, conv: nn.Conv2d) -> nn.Conv2d:
    """One Conv2d (without padding) equal to ``conv(norm(x))`` in eval mode."""
    scale, shift = _affine_of(norm)
    per_input = (1, -1, 1, 1)
    weight = conv.weight * scale.reshape(per_input)
    bias = conv.bias if conv.bias is not None else conv.weight.new_zeros(conv.out_channels)
    bias = bias + (conv.weight * shift.reshape(per_input)).sum(dim=(1, 2, 3))
    return _with_weight_and_bias(conv, weight, bias)


def _takes_folded_input(conv: nn.Module) -> bool:
    # Zero padding would pad the normalized map with zeros, which the folded conv cannot
    # reproduce (it would pad the raw map), so a padded conv keeps its norm in front.
    return (
        isinstance(conv, nn.Conv2d)
        and conv.groups == 1
        and (conv.padding == "valid" or all(p == 0 for p in conv.padding))
    )


def _flattens_channels(flatten: nn.Module) -> bool:
    return isinstance(flatten, nn.Flatten) and flatten.start_dim == 1 and flatten.end_dim == -1


def _fits_flattened(norm: nn.Module, linear: nn.Module) -> bool:
    """Whether a map norm, then a Flatten, feeds ``linear`` a whole number of inputs per channel."""
    return (
        _is_map_norm(norm)
        and isinstance(linear, nn.Linear)
        and linear.in_features % norm.num_features == 0
    )


def _fold_sequential(seq: nn.Sequential) -> nn.Sequential:
    kept: list[tuple[str, nn.Module]] = []
    for name, module in seq.named_children():
        last = kept[-1][1] if kept else None
        before_last = kept[-2][1] if len(kept) > 1 else None
        if (isinstance(last, nn.Linear) and _is_vector_norm(module)) or (
            isinstance(last, nn.Conv2d) and _is_map_norm(module)
        ):
            kept[-1] = (kept[-1][0], _layer_then_norm(last, module))
        elif _is_vector_norm(last) and isinstance(module, nn.Linear):
            kept[-1] = (name, _norm_then_linear(last, module))
        elif _is_map_norm(last) and _takes_folded_input(module):
            kept[-1] = (name, _norm_then_conv(last, module))
        elif _flattens_channels(last) and _fits_flattened(before_last, module):
            kept[-2:] = [kept[-1], (name, _norm_then_linear(before_last, module))]
        else:
            kept.append((name, module))
    return nn.Sequential(OrderedDict(kept))


@torch.no_grad()
def fold_batchnorm(net: nn.Module) -> nn.Module:
    """An inference-only copy of ``net`` with each BatchNorm next to a Linear or Conv folded in.

    A BatchNorm directly after a Linear (or a BatchNorm2d after a Conv2d) folds into that
    layer; one directly before a Linear, a Flatten then a Linear, or a Conv2d without
    padding folds into the next layer. The copy is in eval mode, needs no gradients, and
    matches ``net`` in eval mode.
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
    """A BatchNorm ending a network's body (maybe before its Flatten) folds into the head."""
    head, layers = getattr(net, "head", None), getattr(net, "layers", None)
    if not isinstance(head, DuelingHead) or not isinstance(layers, nn.Sequential) or not layers:
        return
    children = list(layers.named_children())
    name, norm = children[-1]
    if len(children) > 1 and _flattens_channels(norm):
        name, norm = children[-2]
        if not _fits_flattened(norm, head.value):
            return
    elif not _is_vector_norm(norm):
        return
    head.value = _norm_then_linear(norm, head.value)
    head.advantage = _norm_then_linear(norm, head.advantage)
    delattr(layers, name)
