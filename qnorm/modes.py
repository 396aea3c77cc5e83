"""The mode rules: which forward pass runs in which mode (see DESIGN.md's table).

Acting (data collection, evaluation, Double-DQN argmax, target values) runs in eval mode
without gradients, so it never touches running statistics and works on a single state.
The loss forward for Q(s, a) is the only train-mode forward that updates running
statistics; a lagged copy bootstrapping a joint update normalizes with batch statistics
but learns nothing (``batch_statistics_mode``). Every switch is scoped and restores each
submodule's previous mode on exit, also when the body raises.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from qnorm.errors import QnormError
from qnorm.norms import is_batch_statistics_module


def _set_modes(modules: list[nn.Module], modes) -> None:
    """Set each module's ``training`` flag, as ``Module.train`` does, module by module.

    Writing the flag straight into the instance dict skips ``Module.__setattr__``'s checks
    (the flag is never a parameter, buffer or submodule); this runs on every update and
    every action, where those checks cost more than the forward pass of a small layer.
    """
    for module, mode in zip(modules, modes, strict=True):
        module.__dict__["training"] = mode


class _ScopedMode:
    """Set every submodule to one mode on entry; give each its own mode back on exit.

    A small class rather than a generator-based context manager: it runs around every
    action and every update, where the generator machinery is a measurable cost.
    """

    __slots__ = ("_custom", "_grad_context", "_modules", "_previous", "net", "training")

    def __init__(self, net: nn.Module, training: bool, grad_context=None) -> None:
        self.net = net
        self.training = training
        self._grad_context = grad_context

    def __enter__(self) -> nn.Module:
        modules = list(self.net.modules())  # parents before children
        previous = [module.training for module in modules]
        self._modules, self._previous = modules, previous
        self._custom = any(type(m).train is not nn.Module.train for m in modules)
        if any(was != self.training for was in previous):
            if self._custom:
                self.net.train(self.training)  # a module with its own train() gets to run it
            else:
                _set_modes(modules, [self.training] * len(modules))
        if self._grad_context is not None:
            self._grad_context.__enter__()
        return self.net

    def __exit__(self, *exc_info) -> None:
        try:
            if self._grad_context is not None:
                self._grad_context.__exit__(*exc_info)
        finally:
            if self._custom:
                for module, was_training in zip(self._modules, self._previous, strict=True):
                    module.train(was_training)  # children, later in the list, end with their own
            else:
                _set_modes(self._modules, self._previous)


def acting_mode(net: nn.Module) -> _ScopedMode:
    """Eval mode under ``torch.inference_mode()``, the previous modes restored on exit."""
    return _ScopedMode(net, training=False, grad_context=torch.inference_mode())


def eval_mode(net: nn.Module) -> _ScopedMode:
    """Eval mode with gradients left as they are (for eval-mode passes inside an update)."""
    return _ScopedMode(net, training=False)


def learning_mode(net: nn.Module) -> _ScopedMode:
    """Train mode (batch statistics, running statistics updated), restored on exit."""
    return _ScopedMode(net, training=True)


class _BatchStatisticsMode:
    """Train mode without gradients whose running statistics are left as they were."""

    __slots__ = ("_mode", "_saved", "net")

    def __init__(self, net: nn.Module) -> None:
        self.net = net
        self._mode = _ScopedMode(net, training=True, grad_context=torch.no_grad())

    def __enter__(self) -> nn.Module:
        self._saved = [buffer.clone() for buffer in self.net.buffers()]
        return self._mode.__enter__()

    def __exit__(self, *exc_info) -> None:
        try:
            self._mode.__exit__(*exc_info)
        finally:
            with torch.no_grad():
                for buffer, saved in zip(self.net.buffers(), self._saved, strict=True):
                    buffer.copy_(saved)
            self._saved = []


def batch_statistics_mode(net: nn.Module) -> _BatchStatisticsMode:
    """Train-mode normalization (batch statistics) for a forward that must not learn.

    For a lagged copy that bootstraps the way the online network is trained: its norms
    use the batch's statistics, no gradients flow, and every buffer (running statistics,
    step counters) is restored on exit, so the copy changes only when it is synced.
    """
    return _BatchStatisticsMode(net)


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


# The dims of one unbatched observation, by the first layer type found in a user's module.
_INPUT_LAYER_NDIMS = ((nn.Conv2d, 3), (nn.Conv1d, 2), (nn.Linear, 1))


def observation_ndim(net: nn.Module) -> int:
    """The dims of one unbatched observation: ``net.obs_ndim``, else its first input layer's."""
    obs_ndim = getattr(net, "obs_ndim", None)
    if obs_ndim is not None:
        return obs_ndim
    for module in net.modules():
        for layer_type, ndim in _INPUT_LAYER_NDIMS:
            if isinstance(module, layer_type):
                return ndim
    return 1


def _as_batch(net: nn.Module, obs) -> tuple[torch.Tensor, bool]:
    """``obs`` as a tensor on the network's device with a batch dim, and whether it had one."""
    tensor = torch.as_tensor(obs if torch.is_tensor(obs) else np.asarray(obs))
    param = _first_parameter(net)
    if param is not None:
        # Float observations take the network's float dtype (numpy defaults to float64).
        # qnorm's networks convert and scale integer images themselves; a user's module
        # gets them as its float dtype, since torch layers refuse integer inputs.
        users_module = not hasattr(net, "obs_ndim")
        as_float = tensor.is_floating_point() or (users_module and param.is_floating_point())
        tensor = tensor.to(device=param.device, dtype=param.dtype if as_float else tensor.dtype)
    obs_ndim = observation_ndim(net)
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
