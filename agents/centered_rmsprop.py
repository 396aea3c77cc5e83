"""Centered RMSprop with momentum over one flat buffer per statistic (the MinAtar optimizer).

The arithmetic is ``torch.optim.RMSprop(centered=True, momentum=m)``'s, op for op; what
differs is where it runs. torch's step makes each of its ~ten elementwise passes once per
parameter tensor, behind a generic step in Python; here every pass is one kernel over all
parameters, whose gradients are gathered into one buffer first. Two slow paths of CPU float
arithmetic, both measured on the MinAtar network in training, are kept out of the step:

- the square root of an exact zero (dead units have zero gradients, so zero variance) runs
  ~30x slower than of a normal number in torch's CPU kernel: the variance is floored at
  ``(eps * 1e-8) ** 2`` before the root. The result does not change: ``eps`` is added next,
  and a root below ``eps * 1e-8`` is less than half a unit in the last place of ``eps``.
  (A variance that rounding makes slightly negative gives ``eps`` here, NaN in torch.)
- subnormal floats (state of dead units decaying towards zero) make every op on them ~50x
  slower: every ``FLUSH_EVERY`` steps, and on loading, state entries smaller than
  ``FLUSH_BELOW`` become 0.
  Decaying by ``alpha`` (0.95) takes such an entry ~360 steps to turn subnormal, so none
  does; the parameter change it stood for (``lr * 1e-30``) is below any float's resolution.

``state_dict`` and ``load_state_dict`` use torch's layout (per-parameter ``step``,
``square_avg``, ``momentum_buffer``, ``grad_avg``), so snapshots move between the two.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

FLUSH_BELOW = 1e-30
FLUSH_EVERY = 100
STATE_KEYS = ("square_avg", "momentum_buffer", "grad_avg")


class CenteredRMSprop:
    """Centered RMSprop with momentum; a parameter without a gradient has a zero gradient."""

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        *,
        lr: float,
        alpha: float,
        momentum: float,
        eps: float,
    ) -> None:
        self.params = list(params)
        if not self.params or momentum <= 0 or eps <= 0:
            raise ValueError("CenteredRMSprop needs parameters, momentum > 0 and eps > 0")
        self.lr, self.alpha, self.momentum, self.eps = lr, alpha, momentum, eps
        self.variance_floor = (eps * 1e-8) ** 2
        self.sizes = [p.numel() for p in self.params]
        self.steps = 0
        # grad and avg are scratch; the other three are the optimizer's state.
        self.grad, self.avg, self.square_avg, self.momentum_buffer, self.grad_avg = (
            self.params[0].new_zeros(sum(self.sizes)) for _ in range(5)
        )

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop (or zero) every parameter's gradient, as ``torch.optim`` does."""
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter from its current gradient."""
        self._gather_grads()
        g, one_minus_alpha = self.grad, 1.0 - self.alpha
        self.steps += 1
        self.square_avg.mul_(self.alpha).addcmul_(g, g, value=one_minus_alpha)
        self.grad_avg.lerp_(g, one_minus_alpha)
        torch.addcmul(self.square_avg, self.grad_avg, self.grad_avg, value=-1, out=self.avg)
        self.avg.clamp_min_(self.variance_floor).sqrt_().add_(self.eps)
        self.momentum_buffer.mul_(self.momentum).addcdiv_(g, self.avg)
        torch._foreach_add_(self.params, self._per_param(self.momentum_buffer), alpha=-self.lr)
        if self.steps % FLUSH_EVERY == 0:
            self._flush_tiny()

    def _flush_tiny(self) -> None:
        for key in STATE_KEYS:
            buffer = getattr(self, key)
            buffer.masked_fill_(buffer.abs() < FLUSH_BELOW, 0.0)

    def _gather_grads(self) -> None:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        torch.cat([grad.reshape(-1) for grad in grads], out=self.grad)

    def _per_param(self, flat: torch.Tensor) -> list[torch.Tensor]:
        return [
            part.view_as(p) for part, p in zip(flat.split(self.sizes), self.params, strict=True)
        ]

    def state_dict(self) -> dict:
        """torch's RMSprop layout: state per parameter index (empty before the first step)."""
        state = {}
        if self.steps:
            step = torch.tensor(float(self.steps))
            views = {key: self._per_param(getattr(self, key)) for key in STATE_KEYS}
            state = {
                i: {"step": step.clone(), **{key: views[key][i].clone() for key in STATE_KEYS}}
                for i in range(len(self.params))
            }
        group = {
            "lr": self.lr,
            "alpha": self.alpha,
            "eps": self.eps,
            "weight_decay": 0.0,
            "momentum": self.momentum,
            "centered": True,
            "params": list(range(len(self.params))),
        }
        return {"state": state, "param_groups": [group]}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore state saved by ``state_dict`` here or by ``torch.optim.RMSprop``."""
        state = state_dict["state"]
        if not state:
            self.steps = 0
            for key in STATE_KEYS:
                getattr(self, key).zero_()
            return
        if set(state) != set(range(len(self.params))):
            raise ValueError(f"state for {len(state)} parameters, not {len(self.params)}")
        steps = {int(entry["step"]) for entry in state.values()}
        if len(steps) != 1:
            raise ValueError(f"parameters at different step counts {sorted(steps)}")
        with torch.no_grad():
            for key in STATE_KEYS:
                for i, view in enumerate(self._per_param(getattr(self, key))):
                    saved = state[i][key]
                    if saved.shape != view.shape:
                        raise ValueError(f"{key} of parameter {i}: shape {tuple(saved.shape)}")
                    view.copy_(saved)
            self._flush_tiny()  # torch's state may hold subnormals
        self.steps = steps.pop()
