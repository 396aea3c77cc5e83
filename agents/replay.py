"""A preallocated circular replay buffer of transitions, stored as tensors on one device."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from agents.memory import check_fits
from agents.n_step import NextRows, n_step_returns
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
    # [B] float32 gamma ** m of an m-step return (agents.n_step); None: one step, gamma
    discounts: torch.Tensor | None = None

    def minibatch(self, step: int) -> Batch:
        """Minibatch ``step`` of a phase's batches (fields shaped ``[steps, B, ...]``)."""
        return Batch(*(None if field is None else field[step] for field in self))

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """The fields that are set (a one-step batch has no discounts)."""
        return tuple(field for field in self if field is not None)


class ReplayBuffer:
    """Circular storage of (s, a, r, s', terminated, truncated) with uniform sampling.

    With ``n_step`` above 1 each row also records the row of its env's next transition, so
    a sample sums up to ``n_step`` rewards (``agents.n_step``).
    """

    def __init__(
        self,
        capacity: int,
        obs_shape: tuple[int, ...],
        obs_dtype: np.dtype | str = np.float32,
        device: torch.device | str = "cpu",
        seed: int = 0,
        num_envs: int = 1,
        n_step: int = 1,
        gamma: float = 0.99,
    ) -> None:
        if capacity < 1:
            raise QnormError(f"replay capacity must be positive, got {capacity}")
        if n_step < 1:
            raise QnormError(f"n_step must be positive, got {n_step}")
        self.capacity = int(capacity)
        self.obs_shape = tuple(obs_shape)
        self.device = torch.device(device)
        self.num_envs, self.n_step, self.gamma = int(num_envs), int(n_step), float(gamma)
        nbytes = self.nbytes_for(capacity, self.obs_shape, obs_dtype, n_step)
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
        # n-step returns follow each row to its env's next one
        self.links = NextRows(capacity, self.num_envs, self.device) if self.n_step > 1 else None

    @staticmethod
    def nbytes_for(
        capacity: int,
        obs_shape: tuple[int, ...],
        obs_dtype: np.dtype | str = np.float32,
        n_step: int = 1,
    ) -> int:
        """Bytes a buffer of this capacity and observation takes, without allocating it."""
        obs_bytes = int(np.prod(obs_shape, dtype=np.int64)) * np.dtype(obs_dtype).itemsize
        link = 8 if n_step > 1 else 0  # the next row's index
        return int(capacity) * (2 * obs_bytes + 8 + 4 + 4 + 4 + link)  # s, s', a, r, term, trunc

    @property
    def nbytes(self) -> int:
        """Bytes held by the storage tensors."""
        link = self.links.rows.nbytes if self.links else 0
        return sum(getattr(self, name).nbytes for name in COLUMNS) + link

    def __len__(self) -> int:
        return self.size

    def add(self, obs, actions, rewards, next_obs, terminated, truncated, env_ids=None) -> None:
        """Store ``n`` transitions (leading dim ``n``, or one unbatched), overwriting the oldest.

        ``env_ids`` says which env each row came from (default ``range(n)``); only n-step
        returns need it, to link each row to its env's next one.
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
        if self.links:
            self.links.add(self.position, n, columns["terminated"], columns["truncated"], env_ids)
        first = min(n, self.capacity - self.position)  # rows before the end, then wrap around
        for name, values in columns.items():
            self._write(name, self.position, values[:first])
            if first < n:
                self._write(name, 0, values[first:])
        self.position = (self.position + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def end_episodes(self) -> None:
        """The envs start fresh episodes: no stored row links to what they add next."""
        if self.links:
            self.links.end_episodes()

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The stored rows and the sampling generator's state, for a training-state snapshot."""
        rows = {name: getattr(self, name)[: self.size] for name in COLUMNS}
        if self.links:
            rows["next_row"] = self.links.rows[: self.size]
        return {**rows, "generator": self.generator.get_state()}

    def state(self) -> dict:
        """Write position and fill (and each env's newest row, for n-step), for a snapshot."""
        state = {"position": self.position, "size": self.size}
        if self.links:
            state["last_rows"] = self.links.newest()
        return state

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
        if self.links:
            self.links.load_state(tensors.get("next_row"), state.get("last_rows"), size)

    def _write(self, name: str, start: int, values: np.ndarray) -> None:
        stop = start + len(values)
        if self._host_views is not None:  # CPU: numpy writes into the tensors' memory
            self._host_views[name][start:stop] = values
        else:
            store = getattr(self, name)
            store[start:stop] = torch.from_numpy(values).to(self.device, store.dtype)

    def sample(self, batch_size: int) -> Batch:
        """``batch_size`` transitions drawn uniformly with replacement."""
        return self.sample_batches(1, batch_size).minibatch(0)

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
        if self.links:
            return self._n_step_batch(idx)
        return Batch(
            self.obs[idx],
            self.actions[idx],
            self.rewards[idx],
            self.next_obs[idx],
            self.terminated[idx],
            self.truncated[idx],
        )

    def _n_step_batch(self, idx: torch.Tensor) -> Batch:
        """The rows ``idx`` with returns of up to ``n_step`` rewards (``agents.n_step``)."""
        returns = n_step_returns(idx, self.links, self.rewards, self.n_step, self.gamma)
        last = returns.last
        return Batch(
            self.obs[idx],
            self.actions[idx],
            returns.rewards,
            self.next_obs[last],
            self.terminated[last],
            self.truncated[last],
            returns.discounts,
        )


def _as_array(values) -> np.ndarray:
    if torch.is_tensor(values):
        return values.detach().cpu().numpy()
    return np.asarray(values)
