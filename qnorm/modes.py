"""The mode rules: which forward pass runs in which mode (see DESIGN.md's table).

Acting (data collection, evaluation, Double-DQN argmax, target values) runs in eval mode
without gradients, so it never touches running statistics and works on a single state.
The loss forward for Q(s, a) is the only train-mode forward. Every switch is scoped and
restores each submodule's previous mode on exit, also when the body raises.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from qnorm.errors import QnormError
from qnorm.norms import is_batch_statistics_module


@contextmanager
def _scoped_mode(net: nn.Module, training: bool) -> Iterator[nn.Module]:
    previous = [(module, module.training) for module in net.modules()]
    net.train(training)
    try:
        yield net
    finally:
        for module, was_training in previous:
            module.training = was_training


@contextmanager
def acting_mode(net: nn.Module) -> Iterator[nn.Module]:
    """Eval mode under ``torch.inference_mode()``, the previous modes restored on exit."""
    with _scoped_mode(net, training=False), torch.inference_mode():
        yield net


@contextmanager
def eval_mode(net: nn.Module) -> Iterator[nn.Module]:
    """Eval mode with gradients left as they are (for eval-mode passes inside an update)."""
    with _scoped_mode(net, training=False):
        yield net


@contextmanager
def learning_mode(net: nn.Module) -> Iterator[nn.Module]:
    """Train mode (batch statistics, running statistics updated), restored on exit."""
    with _scoped_mode(net, training=True):
        yield net


def has_batch_statistics(net: nn.Module) -> bool:
    """Whether any module of ``net`` normalizes with train-mode batch statistics."""
    return any(is_batch_statistics_module(m) for m in net.modules())


def check_train_batch_size(net: nn.Module, batch_size: int) -> None:
    """Raise a clear error if ``net`` cannot be trained on batches of ``batch_size``."""
    if batch_size < 2 and has_batch_statistics(net):
        raise QnormError(
            f"batch size {batch_size} cannot train a network with batch-statistics "
            "normalization: the variance of one sample is undefined; use a batch size of 2 or more"
        )


def _first_parameter(net: nn.Module) -> torch.Tensor | None:
    return next(iter(net.parameters()), None)


def _as_batch(net: nn.Module, obs) -> tuple[torch.Tensor, bool]:
    """``obs`` as a tensor on the network's device with a batch dim, and whether it had one."""
    tensor = torch.as_tensor(obs if torch.is_tensor(obs) else np.asarray(obs))
    param = _first_parameter(net)
    if param is not None:
        # Float observations take the network's float dtype (numpy defaults to float64).
        dtype = param.dtype if tensor.is_floating_point() else tensor.dtype
        tensor = tensor.to(device=param.device, dtype=dtype)
    obs_ndim = getattr(net, "obs_ndim", 1)
    if tensor.dim() == obs_ndim:
        return tensor.unsqueeze(0), False
    if tensor.dim() == obs_ndim + 1:
        return tensor, True
    raise QnormError(
        f"expected one observation with {obs_ndim} dims or a batch with {obs_ndim + 1}, "
        f"got a tensor of shape {tuple(tensor.shape)}"
    )


def q_values(net: nn.Module, obs) -> torch.Tensor:
    """Q-values in acting mode for one unbatched observation or a batch of them."""
    batch, batched = _as_batch(net, obs)
    with acting_mode(net):
        values = net(batch)
    return values if batched else values[0]


def greedy_action(net: nn.Module, obs) -> int | np.ndarray:
    """The greedy action: an int for one observation, an int64 array for a batch."""
    batch, batched = _as_batch(net, obs)
    with acting_mode(net):
        actions = net(batch).argmax(dim=-1).cpu().numpy()
    return actions if batched else int(actions[0])
