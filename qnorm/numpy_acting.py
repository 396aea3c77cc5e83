"""A numpy mirror of a QNetwork's eval-mode forward pass, for cheap acting on the CPU.

Picking an action for one state in eager PyTorch costs tens of microseconds of dispatch
for a few microseconds of arithmetic. This mirror holds numpy *views* of the network's
parameters and norm buffers (no copies), so it follows every in-place optimizer step and
target sync without refreshing, and computes exactly the eval-mode forward: BatchNorm
with its running statistics, LayerNorm and RMSNorm per sample.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from qnorm.batchrenorm import BatchRenorm
from qnorm.networks import DuelingHead, QNetwork

Op = Callable[[np.ndarray], np.ndarray]


def _view(tensor: torch.Tensor | None) -> np.ndarray | None:
    return None if tensor is None else tensor.detach().numpy()


def _linear(layer: nn.Linear) -> Op:
    weight_t, bias = _view(layer.weight).T, _view(layer.bias)
    if bias is None:
        return lambda x: x @ weight_t
    return lambda x: x @ weight_t + bias


def _batchnorm(norm: nn.BatchNorm1d) -> Op:
    mean, var, eps = _view(norm.running_mean), _view(norm.running_var), norm.eps
    weight, bias = _view(norm.weight), _view(norm.bias)
    if weight is None:
        return lambda x: (x - mean) / np.sqrt(var + eps)
    return lambda x: (x - mean) / np.sqrt(var + eps) * weight + bias


def _layernorm(norm: nn.LayerNorm) -> Op:
    weight, bias, eps = _view(norm.weight), _view(norm.bias), norm.eps

    def forward(x: np.ndarray) -> np.ndarray:
        centred = x - x.mean(axis=-1, keepdims=True)
        y = centred / np.sqrt((centred * centred).mean(axis=-1, keepdims=True) + eps)
        if weight is not None:
            y = y * weight
        return y if bias is None else y + bias

    return forward


def _rmsnorm(norm: nn.RMSNorm) -> Op:
    weight = _view(norm.weight)
    eps = norm.eps if norm.eps is not None else float(np.finfo(np.float32).eps)

    def forward(x: np.ndarray) -> np.ndarray:
        y = x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps)
        return y if weight is None else y * weight

    return forward


def _dueling(head: DuelingHead) -> Op:
    value, advantage = _linear(head.value), _linear(head.advantage)

    def forward(x: np.ndarray) -> np.ndarray:
        adv = advantage(x)
        return value(x) + adv - adv.mean(axis=-1, keepdims=True)

    return forward


_ACTIVATIONS: dict[type, Op] = {
    nn.ReLU: lambda x: np.maximum(x, 0.0),
    nn.Tanh: np.tanh,
    nn.SiLU: lambda x: x / (1.0 + np.exp(-x)),
    nn.ELU: lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
}


def _op_for(module: nn.Module) -> Op | None:
    if isinstance(module, nn.Linear):
        return _linear(module)
    if isinstance(module, nn.BatchNorm1d) and module.track_running_stats:
        return _batchnorm(module)
    if isinstance(module, BatchRenorm):  # eval mode: BatchNorm with its running statistics
        return _batchnorm(module)
    if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) == 1:
        return _layernorm(module)
    if isinstance(module, nn.RMSNorm) and len(module.normalized_shape) == 1:
        return _rmsnorm(module)
    if isinstance(module, DuelingHead):
        return _dueling(module)
    if type(module) in _ACTIVATIONS and (type(module) is not nn.ELU or module.alpha == 1.0):
        return _ACTIVATIONS[type(module)]
    return None


class NumpyActor:
    """Greedy actions and Q-values of a CPU float32 QNetwork, computed in numpy (eval mode)."""

    def __init__(self, ops: list[Op]) -> None:
        self._ops = ops

    @classmethod
    def mirror(cls, net: nn.Module) -> NumpyActor | None:
        """A mirror of ``net``, or None where it has a layer, dtype or device not mirrored."""
        if not isinstance(net, QNetwork):
            return None
        params = [*net.parameters(), *net.buffers()]
        if any(
            t.device.type != "cpu" or t.dtype not in (torch.float32, torch.int64) for t in params
        ):
            return None
        modules = [*net.layers, *([] if net.head is None else [net.head])]
        ops = [_op_for(module) for module in modules]
        return None if any(op is None for op in ops) else cls(ops)

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        """Eval-mode Q-values for observations ``[..., obs_dim]``."""
        x = np.asarray(obs, dtype=np.float32)
        for op in self._ops:
            x = op(x)
        return x

    def greedy(self, obs: np.ndarray) -> np.ndarray:
        """Greedy actions for a batch of observations ``[n, obs_dim]``."""
        return self.q_values(obs).argmax(axis=-1)
