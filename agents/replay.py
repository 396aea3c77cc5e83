"""A preallocated circular replay buffer of transitions, stored as tensors on one device."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from agents.memory import check_fits
from qnorm import QnormError

COLUMNS = ("obs", "next_obs", "actions", "rewards", "terminated", "truncated")


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
        nbytes = self.nbytes_for(capacity, self.obs_shape, obs_dtype)
        check_fits(nbytes, self.device, f"a replay buffer of {self.capacity:,} transitions")
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
        on_cpu = self.device.type == "cpu"
        self._host_views = {n: getattr(self, n).numpy() for n in COLUMNS} if on_cpu else None

    @staticmethod
    def nbytes_for(
        capacity: int, obs_shape: tuple[int, ...], obs_dtype: np.dtype | str = np.float32
    ) -> int:
        """Bytes a buffer of this capacity and observation takes, without allocating it."""
        obs_bytes = int(np.prod(obs_shape, dtype=np.int64)) * np.dtype(obs_dtype).itemsize
        return int(capacity) * (2 * obs_bytes + 8 + 4 + 4 + 4)  # s, s', action, r, term, trunc

    @property
    def nbytes(self) -> int:
        """Bytes held by the storage tensors."""
        return sum(getattr(self, name).nbytes for name in COLUMNS)

    def __len__(self) -> int:
        return self.size

    def add(self, obs, actions, rewards, next_obs, terminated, truncated, env_ids=None) -> None:
        """Store ``n`` transitions (leading dim ``n``, or one unbatched), overwriting the oldest.

        ``env_ids`` (which env each row came from) is accepted for FrameReplayBuffer's
        interface and not needed here: each row stores its whole observations.
        """
        columns = {
            "obs": obs,
            "next_obs": next_obs,
            "actions": actions,
            "rewards": rewards,
            "terminated": terminated,
            "truncated": truncated,
        }
        columns = {k: _as_array(v) for k, v in columns.items()}
        if columns["obs"].shape == self.obs_shape:  # one unbatched transition
            columns = {k: v[None] for k, v in columns.items()}
        n = columns["obs"].shape[0]
        for name, values in columns.items():
            expected = (n, *getattr(self, name).shape[1:])
            if values.shape != expected:
                raise QnormError(
                    f"transition field {name!r} has shape {values.shape}, expected {expected}"
                )
        if n > self.capacity:
            raise QnormError(f"cannot add {n} transitions to a buffer of capacity {self.capacity}")
        first = min(n, self.capacity - self.position)  # rows before the end, then wrap around
        for name, values in columns.items():
            self._write(name, self.position, values[:first])
            if first < n:
                self._write(name, 0, values[first:])
        self.position = (self.position + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def end_episodes(self) -> None:
        """The envs start fresh episodes: rows keep obs and next_obs, so nothing links them."""

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The stored rows and the sampling generator's state, for a training-state snapshot."""
        rows = {name: getattr(self, name)[: self.size] for name in COLUMNS}
        return {**rows, "generator": self.generator.get_state()}

    def state(self) -> dict:
        """Write position and fill, for a training-state snapshot."""
        return {"position": self.position, "size": self.size}

    def load_state(self, tensors: dict[str, torch.Tensor], state: dict) -> None:
        """Restore what ``state_tensors`` and ``state`` saved."""
        size, position = int(state["size"]), int(state["position"])
        if not 0 <= position < self.capacity or not 0 <= size <= self.capacity:
            raise QnormError(
                f"the snapshot's replay buffer does not fit a capacity of {self.capacity:,}"
            )
        for name in COLUMNS:
            rows = tensors[name]
            if tuple(rows.shape) != (size, *getattr(self, name).shape[1:]):
                raise QnormError(
                    f"the snapshot's replay field {name!r} has shape {tuple(rows.shape)}"
                )
            getattr(self, name)[:size] = rows.to(self.device)
        self.generator.set_state(tensors["generator"])
        self.position, self.size = position, size

    def _write(self, name: str, start: int, values: np.ndarray) -> None:
        stop = start + len(values)
        if self._host_views is not None:  # CPU: numpy writes into the tensors' memory
            self._host_views[name][start:stop] = values
        else:
            store = getattr(self, name)
            store[start:stop] = torch.from_numpy(values).to(self.device, store.dtype)

    def sample(self, batch_size: int) -> Batch:
        """``batch_size`` transitions drawn uniformly with replacement."""
        return Batch(*(field[0] for field in self.sample_batches(1, batch_size)))

    def sample_batches(self, num_batches: int, batch_size: int) -> Batch:
        """``num_batches`` minibatches at once; each field is shaped [num_batches, batch_size, ...].

        One index draw and one gather per field serve all the gradient steps of an update
        phase, instead of one per step.
        """
        if batch_size > self.size:
            raise QnormError(
                f"cannot sample {batch_size} transitions from a buffer holding {self.size}"
            )
        idx = torch.randint(
            0,
            self.size,
            (num_batches, batch_size),
            device=self.device,
            generator=self.generator,
        )
        return Batch(
            self.obs[idx],
            self.actions[idx],
            self.rewards[idx],
            self.next_obs[idx],
            self.terminated[idx],
            self.truncated[idx],
        )


def _as_array(values) -> np.ndarray:
    if torch.is_tensor(values):
        return values.detach().cpu().numpy()
    return np.asarray(values)
