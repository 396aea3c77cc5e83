"""A preallocated circular replay buffer of transitions, stored as tensors on one device."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from qnorm import QnormError


class Batch(NamedTuple):
    """A sampled minibatch of transitions."""

    obs: torch.Tensor  # [B, *obs_shape], the env's dtype
    actions: torch.Tensor  # [B] int64
    rewards: torch.Tensor  # [B] float32
    next_obs: torch.Tensor  # [B, *obs_shape]
    terminated: torch.Tensor  # [B] float32: 1 ends bootstrapping
    truncated: torch.Tensor  # [B] float32: kept for analysis; never stops bootstrapping


class ReplayBuffer:
    """Circular storage of (s, a, r, s', terminated, truncated) with uniform sampling."""

    def __init__(
        self,
        capacity: int,
        obs_shape: tuple[int, ...],
        obs_dtype: np.dtype | str = np.float32,
        device: torch.device | str = "cpu",
        seed: int = 0,
    ) -> None:
        if capacity < 1:
            raise QnormError(f"replay capacity must be positive, got {capacity}")
        self.capacity = int(capacity)
        self.obs_shape = tuple(obs_shape)
        self.device = torch.device(device)
        dtype = torch.from_numpy(np.empty(0, dtype=np.dtype(obs_dtype))).dtype
        self.obs = torch.zeros((capacity, *self.obs_shape), dtype=dtype, device=self.device)
        self.next_obs = torch.zeros_like(self.obs)
        self.actions = torch.zeros(capacity, dtype=torch.int64, device=self.device)
        self.rewards = torch.zeros(capacity, dtype=torch.float32, device=self.device)
        self.terminated = torch.zeros(capacity, dtype=torch.float32, device=self.device)
        self.truncated = torch.zeros(capacity, dtype=torch.float32, device=self.device)
        self.position = 0
        self.size = 0
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def __len__(self) -> int:
        return self.size

    def add(self, obs, actions, rewards, next_obs, terminated, truncated) -> None:
        """Store ``n`` transitions (leading dim ``n``, or one unbatched), overwriting the oldest."""
        columns = {
            "obs": obs,
            "next_obs": next_obs,
            "actions": actions,
            "rewards": rewards,
            "terminated": terminated,
            "truncated": truncated,
        }
        columns = {k: torch.as_tensor(v, device=self.device) for k, v in columns.items()}
        if tuple(columns["obs"].shape) == self.obs_shape:  # one unbatched transition
            columns = {k: v.unsqueeze(0) for k, v in columns.items()}
        n = columns["obs"].shape[0]
        for name, values in columns.items():
            expected = (n, *getattr(self, name).shape[1:])
            if tuple(values.shape) != expected:
                raise QnormError(
                    f"transition field {name!r} has shape {tuple(values.shape)}, "
                    f"expected {expected}"
                )
        if n > self.capacity:
            raise QnormError(f"cannot add {n} transitions to a buffer of capacity {self.capacity}")
        rows = (self.position + torch.arange(n, device=self.device)) % self.capacity
        for name, values in columns.items():
            store = getattr(self, name)
            store[rows] = values.to(store.dtype)
        self.position = (self.position + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int) -> Batch:
        """``batch_size`` transitions drawn uniformly with replacement."""
        if batch_size > self.size:
            raise QnormError(
                f"cannot sample {batch_size} transitions from a buffer holding {self.size}"
            )
        idx = torch.randint(
            0, self.size, (batch_size,), device=self.device, generator=self.generator
        )
        return Batch(
            self.obs[idx],
            self.actions[idx],
            self.rewards[idx],
            self.next_obs[idx],
            self.terminated[idx],
            self.truncated[idx],
        )
