"""The DQN agent: epsilon-greedy acting, the TD update and target sync, all through qnorm's modes.

Mode rules (DESIGN.md): acting, Double-DQN argmax and target values run in eval mode; the
forward for Q(s, a) inside the loss is the only train-mode forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from agents.centered_rmsprop import CenteredRMSprop
from agents.config import DQNConfig
from agents.replay import Batch
from agents.snapshot import load_optimizer_tensors, optimizer_tensors, prefixed, unprefixed
from qnorm import (
    QNetworkSpec,
    QnormError,
    acting_mode,
    batch_statistics_mode,
    build_q_network,
    check_train_batch_size,
    eval_mode,
    hard_update,
    learning_mode,
    make_target,
    observation_ndim,
    soft_update,
)
from qnorm.diagnostics import running_vs_batch_gap
from qnorm.numpy_acting import NumpyActor


@dataclass
class ModeDiagnostics:
    """How much eval-mode action selection differs from the train-mode view of a batch."""

    q_gap: float  # mean |Q_train - Q_eval|
    greedy_agreement: float  # fraction of states whose greedy action agrees in both modes
    # Standard mode: |running-stat - batch-stat normalization| of s' in the target network.
    target_stats_gap: float | None = None


@dataclass
class UpdateStats:
    """Per-update values kept as tensors, so logging decides when to pay for ``.item()``."""

    td_loss: torch.Tensor
    q_values: torch.Tensor
    diagnostics: ModeDiagnostics | None


TARGET_CHUNK_ROWS = 1024
# Up to this many states the numpy mirror acts faster than torch: 16 for MLPs, one for conv
# networks, and only for small ones: on the MinAtar net (0.13M parameters) one state is ~5x
# cheaper in numpy, on the Nature net (1.7M, ~9M multiply-adds) ~1.7x dearer (measured
# side by side, one thread).
NUMPY_ACTING_MAX_BATCH = {"mlp": 16, "conv": 1}
NUMPY_ACTING_MAX_CONV_PARAMETERS = 500_000


class DQNAgent:
    """An online Q-network, its target network, and the optimizer that trains them."""

    def __init__(
        self, spec: QNetworkSpec, config: DQNConfig, device: str | torch.device = "cpu", seed=0
    ) -> None:
        self.spec = spec
        self.config = config
        self.device = torch.device(device)
        torch.manual_seed(seed)
        self.online = build_q_network(spec).to(self.device).eval()
        self.obs_ndim = observation_ndim(self.online)
        check_train_batch_size(self.online, config.batch_size)
        self.joint = config.bn_mode == "joint"
        # Joint (CrossQ-style) updates bootstrap from the online network itself (no target),
        # or, with joint_target, from a lagged copy run the same way.
        lagged = not self.joint or config.joint_target
        self.target = make_target(self.online) if lagged else None
        self.parameters = list(self.online.parameters())
        self.optimizer = make_optimizer(config, self.parameters, self.device)
        self.rng = np.random.default_rng(seed)
        # Acting on a few states is cheaper in numpy than through torch's dispatcher; the
        # mirror computes the same eval-mode forward on views of the live parameters.
        self.numpy_actor = _numpy_mirror(self.online, self.device, self.obs_ndim)
        self.numpy_max_batch = NUMPY_ACTING_MAX_BATCH["mlp" if self.obs_ndim == 1 else "conv"]
        self.loss_fn = F.smooth_l1_loss if config.loss == "huber" else F.mse_loss

    def act(self, obs: np.ndarray, epsilon: float) -> np.ndarray | int:
        """Epsilon-greedy actions: an int for one observation, an array for a batch ``[n, ...]``."""
        if obs.ndim == self.obs_ndim:  # one unbatched observation
            return int(self.act(obs[None], epsilon)[0])
        n = obs.shape[0]
        explore = self.rng.random(n) < epsilon
        if explore.all():  # no forward pass needed
            return self.rng.integers(self.spec.num_actions, size=n)
        actions = self.greedy(obs)
        if explore.any():
            actions = np.where(explore, self.rng.integers(self.spec.num_actions, size=n), actions)
        return actions

    def greedy(self, obs: np.ndarray) -> np.ndarray:
        """Greedy actions for a batch of observations, in acting mode."""
        if self.numpy_actor is not None and obs.shape[0] <= self.numpy_max_batch:
            return self.numpy_actor.greedy(obs)
        with acting_mode(self.online):
            q = self.online(torch.as_tensor(obs, device=self.device))
            return q.argmax(dim=1).cpu().numpy()

    def target_q(self, next_obs: torch.Tensor) -> torch.Tensor:
        """Q_target(s', .) in eval mode, no gradients, for ``[B, ...]`` or ``[steps, B, ...]``."""
        with torch.no_grad(), eval_mode(self.target):
            if next_obs.dim() == self.obs_ndim + 1:
                return self.target(next_obs)
            steps, batch = next_obs.shape[:2]
            rows = next_obs.flatten(0, 1)
            # A whole phase of minibatches at once outgrows the CPU caches; ~1k rows per
            # forward measured fastest (eval mode: the rows are independent).
            per_chunk = max(1, TARGET_CHUNK_ROWS // batch) * batch
            q = torch.cat([self.target(part) for part in rows.split(per_chunk)])
            return q.reshape(steps, batch, -1)

    def td_target(self, batch: Batch, next_q_target: torch.Tensor | None = None) -> torch.Tensor:
        """r + gamma * (1 - terminated) * Q_target(s', a'); a' from the online net if Double.

        For n-step batches r is the summed return and gamma the batch's ``gamma ** m``.
        """
        if next_q_target is None:
            next_q_target = self.target_q(batch.next_obs)
        with torch.no_grad():
            if self.config.double_dqn:
                with eval_mode(self.online):
                    next_actions = self.online(batch.next_obs).argmax(dim=-1, keepdim=True)
                next_q = next_q_target.gather(-1, next_actions).squeeze(-1)
            else:
                next_q = next_q_target.max(dim=-1).values
            return batch.rewards + self.discounts(batch) * (1.0 - batch.terminated) * next_q

    def discounts(self, batch: Batch) -> torch.Tensor | float:
        """The bootstrap discount of each row: gamma, or gamma ** m for an m-step return."""
        return self.config.gamma if batch.discounts is None else batch.discounts

    @property
    def target_scheme(self) -> str:
        """``target_network`` (standard DQN), ``joint_batch`` (one forward of s and s'), or
        ``joint_batch_lagged`` (that forward bootstrapped by a lagged copy)."""
        if not self.joint:
            return "target_network"
        return "joint_batch" if self.target is None else "joint_batch_lagged"

    def update(self, batch: Batch, diagnose: bool = False) -> UpdateStats:
        """One gradient step on the TD loss of ``batch`` (optionally measuring mode effects)."""
        if self.joint:
            return self._joint_step(batch, diagnose)
        return self._gradient_step(batch, self.td_target(batch), diagnose)

    def update_phase(self, batches: Batch, diagnose_steps=()) -> list[UpdateStats]:
        """One gradient step per minibatch of ``batches`` (fields shaped ``[steps, B, ...]``).

        The target network does not change within a phase (it syncs between phases, on env
        steps), so Q_target(s') of every minibatch comes from one forward pass. Without
        Double DQN the TD targets of the whole phase are computed up front.
        """
        steps = batches.obs.shape[0]
        if self.joint:
            return [
                self._joint_step(batches.minibatch(step), step in diagnose_steps)
                for step in range(steps)
            ]
        next_q_target = self.target_q(batches.next_obs)
        targets = None if self.config.double_dqn else self.td_target(batches, next_q_target)
        stats = []
        for step in range(steps):
            batch = batches.minibatch(step)
            target = (
                self.td_target(batch, next_q_target[step]) if targets is None else targets[step]
            )
            stats.append(self._gradient_step(batch, target, step in diagnose_steps))
        return stats

    def _gradient_step(self, batch: Batch, target: torch.Tensor, diagnose: bool) -> UpdateStats:
        q_eval = self._eval_q(batch.obs) if diagnose else None
        with learning_mode(self.online):  # the one train-mode forward: Q(s, a) in the loss
            q_all = self.online(batch.obs)
        gap = running_vs_batch_gap(self.target, batch.next_obs) if diagnose else None
        return self._optimize(q_all, batch.actions, target, q_eval, gap)

    def _joint_step(self, batch: Batch, diagnose: bool) -> UpdateStats:
        """CrossQ's scheme: s and s' through the online network as ONE train-mode batch.

        Both halves of the TD error are normalized with the same batch statistics; the s'
        half is detached and bootstraps the target (its own argmax, as Double DQN would
        pick from the online network), so no target network exists. With ``joint_target``
        a lagged copy runs the same cat(s, s') forward (batch statistics, nothing learned)
        and values the s' half; Double DQN takes the action from the online half.
        """
        q_eval = self._eval_q(batch.obs) if diagnose else None
        n = batch.obs.shape[0]
        joint_obs = torch.cat([batch.obs, batch.next_obs])
        with learning_mode(self.online):  # the one train-mode forward, on cat(s, s')
            q_joint = self.online(joint_obs)
        online_next = q_joint[n:].detach()
        if self.target is None:
            next_q = online_next.max(dim=-1).values
        else:
            next_q = self._lagged_joint_value(joint_obs, online_next, n)
        target = batch.rewards + self.discounts(batch) * (1.0 - batch.terminated) * next_q
        return self._optimize(q_joint[:n], batch.actions, target, q_eval, None)

    def _lagged_joint_value(self, joint_obs, online_next, n: int) -> torch.Tensor:
        """max_a' Q_lagged(s', a') of the lagged copy's joint forward (a' online if Double)."""
        with batch_statistics_mode(self.target):
            lagged_next = self.target(joint_obs)[n:]
        if not self.config.double_dqn:
            return lagged_next.max(dim=-1).values
        actions = online_next.argmax(dim=-1, keepdim=True)
        return lagged_next.gather(-1, actions).squeeze(-1)

    def set_learning_rate(self, lr: float) -> None:
        """The step size of every later update (a learning-rate schedule's value)."""
        if isinstance(self.optimizer, CenteredRMSprop):
            self.optimizer.lr = lr
        else:
            for group in self.optimizer.param_groups:
                group["lr"] = lr

    def _optimize(self, q_all, actions, target, q_eval, target_gap) -> UpdateStats:
        """Loss on Q(s, a), backward, gradient clipping, optimizer step."""
        q = q_all.gather(1, actions.unsqueeze(1)).squeeze(1)
        loss = self.loss_fn(q, target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.max_grad_norm:  # 0: no clipping (the MinAtar reference DQN clips none)
            clip_grad_norm(self.parameters, self.config.max_grad_norm)
        self.optimizer.step()
        diagnostics = None
        if q_eval is not None:
            diagnostics = _compare_modes(q_all.detach(), q_eval, target_gap)
        return UpdateStats(loss.detach(), q.detach().mean(), diagnostics)

    def _eval_q(self, obs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), eval_mode(self.online):
            return self.online(obs)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Networks (norm buffers included) and optimizer state, for a training-state snapshot."""
        tensors = prefixed("online", self.online.state_dict())
        if self.target is not None:
            tensors.update(prefixed("target", self.target.state_dict()))
        return {**tensors, **prefixed("optimizer", optimizer_tensors(self.optimizer))}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what ``state_tensors`` saved, in place (acting views stay valid)."""
        try:
            self.online.load_state_dict(unprefixed("online", tensors))
            if self.target is not None:
                self.target.load_state_dict(unprefixed("target", tensors))
            load_optimizer_tensors(self.optimizer, unprefixed("optimizer", tensors))
        except (RuntimeError, KeyError, ValueError) as exc:
            detail = " ".join(str(exc).split())[:200]
            raise QnormError(f"the snapshot does not fit this run's network ({detail})") from None

    def sync_target(self) -> None:
        """Hard copy when tau is 1, Polyak averaging otherwise; norm buffers always copied."""
        if self.target is None:  # joint updates without joint_target have no target network
            return
        if self.config.tau >= 1.0:
            hard_update(self.target, self.online)
        else:
            soft_update(self.target, self.online, self.config.tau)


def _numpy_mirror(net, device: torch.device, obs_ndim: int) -> NumpyActor | None:
    """The numpy mirror of ``net`` where it acts faster than torch, else None."""
    if device.type != "cpu":
        return None
    size = sum(p.numel() for p in net.parameters())
    if obs_ndim > 1 and size > NUMPY_ACTING_MAX_CONV_PARAMETERS:
        return None
    return NumpyActor.mirror(net)


def clip_grad_norm(params: list[torch.Tensor], max_norm: float) -> None:
    """Scale gradients so their global L2 norm is at most ``max_norm``.

    The same arithmetic as ``nn.utils.clip_grad_norm_``, without its per-call grouping of
    tensors by device and dtype, which costs more than the clipping on small networks.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))


def make_optimizer(
    config: DQNConfig, params: list[torch.Tensor], device: torch.device
) -> torch.optim.Optimizer | CenteredRMSprop:
    """The configured optimizer over ``params``."""
    if config.optimizer == "rmsprop":
        return make_rmsprop(params, config.learning_rate)
    return make_adam(params, config, device)


# Centered RMSprop as the MinAtar reference DQN sets it up (squared-gradient momentum 0.95,
# gradient momentum 0.95, minimum squared gradient 0.01).
RMSPROP_SETTINGS = {"alpha": 0.95, "momentum": 0.95, "eps": 0.01}


def make_rmsprop(params: list[torch.Tensor], lr: float) -> CenteredRMSprop:
    """Centered RMSprop with the MinAtar reference DQN's settings, one kernel per pass."""
    return CenteredRMSprop(params, lr=lr, **RMSPROP_SETTINGS)


def make_adam(
    params: list[torch.Tensor], config: DQNConfig, device: torch.device
) -> torch.optim.Adam:
    """Adam with its fused kernel (one op for all parameters) where torch has one."""
    settings = {
        "lr": config.learning_rate,
        "betas": (config.adam_beta1, 0.999),
        "weight_decay": config.weight_decay,
    }
    try:
        return torch.optim.Adam(params, fused=device.type in ("cpu", "cuda"), **settings)
    except RuntimeError:  # a device or dtype without a fused kernel
        return torch.optim.Adam(params, foreach=True, **settings)


def _compare_modes(
    q_train: torch.Tensor, q_eval: torch.Tensor, target_gap: float | None
) -> ModeDiagnostics:
    """The gap between train-mode and eval-mode Q-values of the same states, before a step."""
    gap = (q_train - q_eval).abs().mean().item()
    agree = (q_train.argmax(dim=1) == q_eval.argmax(dim=1)).float().mean().item()
    return ModeDiagnostics(gap, agree, target_gap)
