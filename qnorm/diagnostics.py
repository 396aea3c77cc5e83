"""Measurements of what normalization does inside a network (for logging, never for training)."""

from __future__ import annotations

import torch
from torch import nn

from qnorm.map_norms import is_channel_first_norm
from qnorm.modes import eval_mode
from qnorm.norms import is_batch_statistics_module


@torch.no_grad()
def running_vs_batch_gap(net: nn.Module, obs: torch.Tensor) -> float | None:
    """How far normalizing with running statistics is from normalizing with ``obs``'s own.

    Runs ``net`` (a QNetwork or ConvQNetwork: its ``layers`` in order) in eval mode and, at every
    batch-statistics norm, compares the input normalized by the running mean and variance
    (what the eval-mode network does) with the same input normalized by the batch's mean
    and variance (what a train-mode pass would do): the mean absolute difference, averaged
    over norms. None if the network has no such norm. With the target network and next
    states s', this is the mismatch between the two halves of a standard TD error.
    """
    layers = getattr(net, "layers", None)
    if not isinstance(layers, nn.Sequential):
        return None
    gaps = []
    prepare = getattr(net, "prepare_obs", None)  # a conv network's input conversion
    with eval_mode(net):
        x = obs.to(torch.float32) if prepare is None else prepare(obs)
        for layer in layers:
            if (
                is_batch_statistics_module(layer)
                and getattr(layer, "running_mean", None) is not None
            ):
                # Statistics are per feature, or per channel of a feature map.
                rows = x.movedim(1, -1) if is_channel_first_norm(layer) else x
                flat = rows.reshape(-1, rows.shape[-1])
                eps = layer.eps
                by_running = (flat - layer.running_mean) * torch.rsqrt(layer.running_var + eps)
                var, mean = torch.var_mean(flat, dim=0, correction=0)
                by_batch = (flat - mean) * torch.rsqrt(var + eps)
                gaps.append((by_running - by_batch).abs().mean())
            x = layer(x)
    return float(torch.stack(gaps).mean()) if gaps else None
