"""The DQN agent: epsilon-greedy acting, the TD update and target sync, all through qnorm's modes.

Mode rules (DESIGN.md): acting, Double-DQN argmax and target values run in eval mode; the
forward for Q(s, a) inside the loss is the only train-mode forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from agents.config import DQNConfig
from agents.replay import Batch
from qnorm import (
    QNetworkSpec,
    acting_mode,
    build_q_network,
    check_train_batch_size,
    eval_mode,
    hard_update,
    learning_mode,
    make_target,
    soft_update,
)


@dataclass
class ModeDiagnostics:
    """How much eval-mode action selection differs from the train-mode view of a batch."""

    q_gap: float  # mean |Q_train - Q_eval|
    greedy_agreement: float  # fraction of states whose greedy action agrees in both modes


@dataclass
class UpdateStats:
    """Per-update values kept as tensors, so logging decides when to pay for ``.item()``."""

    td_loss: torch.Tensor
    q_values: torch.Tensor
    diagnostics: ModeDiagnostics | None


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
        check_train_batch_size(self.online, config.batch_size)
        self.target = make_target(self.online)
        self.optimizer = torch.optim.Adam(self.online.parameters(), lr=config.learning_rate)
        self.rng = np.random.default_rng(seed)
        self.loss_fn = F.smooth_l1_loss if config.loss == "huber" else F.mse_loss

    def act(self, obs: np.ndarray, epsilon: float) -> np.ndarray | int:
        """Epsilon-greedy actions: an int for one observation, an array for a batch ``[n, ...]``."""
        if obs.ndim == 1:
            return int(self.act(obs[None], epsilon)[0])
        n = obs.shape[0]
        explore = self.rng.random(n) < epsilon
        if explore.all():
            return self.rng.integers(self.spec.num_actions, size=n)
        with acting_mode(self.online):
            obs_t = torch.as_tensor(obs, device=self.device)
            greedy = self.online(obs_t).argmax(dim=1).cpu().numpy()
        random = self.rng.integers(self.spec.num_actions, size=n)
        return np.where(explore, random, greedy)

    def td_target(self, batch: Batch) -> torch.Tensor:
        """r + gamma * (1 - terminated) * Q_target(s', a'); a' from the online net if Double."""
        with torch.no_grad():
            with eval_mode(self.target):
                next_q_all = self.target(batch.next_obs)
            if self.config.double_dqn:
                with eval_mode(self.online):
                    next_actions = self.online(batch.next_obs).argmax(dim=1, keepdim=True)
                next_q = next_q_all.gather(1, next_actions).squeeze(1)
            else:
                next_q = next_q_all.max(dim=1).values
            return batch.rewards + self.config.gamma * (1.0 - batch.terminated) * next_q

    def update(self, batch: Batch, diagnose: bool = False) -> UpdateStats:
        """One gradient step on the TD loss of ``batch`` (optionally measuring mode effects)."""
        target = self.td_target(batch)
        q_eval = self._eval_q(batch.obs) if diagnose else None
        with learning_mode(self.online):
            q_all = self.online(batch.obs)
        q = q_all.gather(1, batch.actions.unsqueeze(1)).squeeze(1)
        loss = self.loss_fn(q, target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.online.parameters(), self.config.max_grad_norm)
        self.optimizer.step()
        diagnostics = None if q_eval is None else _compare_modes(q_all.detach(), q_eval)
        return UpdateStats(loss.detach(), q.detach().mean(), diagnostics)

    def _eval_q(self, obs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), eval_mode(self.online):
            return self.online(obs)

    def sync_target(self) -> None:
        """Hard copy when tau is 1, Polyak averaging otherwise; norm buffers always copied."""
        if self.config.tau >= 1.0:
            hard_update(self.target, self.online)
        else:
            soft_update(self.target, self.online, self.config.tau)


def _compare_modes(q_train: torch.Tensor, q_eval: torch.Tensor) -> ModeDiagnostics:
    """The gap between train-mode and eval-mode Q-values of the same states, before a step."""
    gap = (q_train - q_eval).abs().mean().item()
    agree = (q_train.argmax(dim=1) == q_eval.argmax(dim=1)).float().mean().item()
    return ModeDiagnostics(gap, agree)
