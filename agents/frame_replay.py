"""A replay buffer for image observations that stores each frame once.

The rule: every env has its own stream, a ring of frames in the order that env produced them.
An episode's first transition writes its whole first observation (``w`` frames: the ``k`` of a
frame stack, or the one observation when ``frame_stack`` is 0), and every transition then writes
only the newest frame of its next observation. So each transition owns the slot of that frame,
and its obs and next_obs are the ``w`` frames of its stream that end one slot before it and at
it. A new episode starts after a transition with terminated or truncated, so a rebuilt stack
never spans two episodes, and it equals exactly the observation the env returned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from agents.memory import check_fits
from agents.n_step import n_step_returns
from agents.replay import Batch
from qnorm import QnormError

# per frame slot, besides the frame: action int64, reward float32, terminated and truncated
# bools, and the slot's place in (and entry of) the list of sampleable slots, both int64
META_BYTES_PER_SLOT = 8 + 4 + 1 + 1 + 8 + 8
RECORDS = ("actions", "rewards", "terminated", "truncated")


@dataclass(frozen=True)
class FrameLayout:
    """How a FrameReplayBuffer lays out its storage: one frame ring per env."""

    capacity: int
    obs_shape: tuple[int, ...]
    obs_dtype: np.dtype
    num_envs: int = 1
    frame_stack: int = 0

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise QnormError(f"replay capacity must be positive, got {self.capacity}")
        if self.num_envs < 1:
            raise QnormError(f"num_envs must be positive, got {self.num_envs}")
        if self.capacity < self.num_envs:
            raise QnormError(
                f"replay capacity {self.capacity} is below num_envs {self.num_envs}: "
                "each env needs room for at least one transition"
            )
        if self.frame_stack < 0:
            raise QnormError(f"frame_stack must be 0 or more, got {self.frame_stack}")
        if self.frame_stack and (len(self.obs_shape) < 2 or self.obs_shape[0] != self.frame_stack):
            raise QnormError(
                f"frame_stack {self.frame_stack} needs observations shaped "
                f"({self.frame_stack}, ...) with the stack first, got {self.obs_shape}"
            )

    @property
    def window(self) -> int:
        """Frames per observation."""
        return self.frame_stack or 1

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """The shape of one stored frame."""
        return self.obs_shape[1:] if self.frame_stack else self.obs_shape

    @property
    def frame_nbytes(self) -> int:
        """Bytes of one frame."""
        return int(np.prod(self.frame_shape, dtype=np.int64)) * self.obs_dtype.itemsize

    @property
    def ring_sizes(self) -> tuple[int, ...]:
        """Frame slots per env: its share of the capacity plus room for one first observation."""
        share, extra = divmod(self.capacity, self.num_envs)
        return tuple(share + (env < extra) + self.window for env in range(self.num_envs))

    @property
    def slots(self) -> int:
        """Frame slots in all."""
        return sum(self.ring_sizes)

    @property
    def frames_nbytes(self) -> int:
        """Bytes of the frame storage (on the buffer's device)."""
        return self.slots * self.frame_nbytes

    @property
    def host_nbytes(self) -> int:
        """Bytes of the per-transition records and the envs' last frames (always in host memory)."""
        return self.slots * META_BYTES_PER_SLOT + self.num_envs * self.frame_nbytes

    @property
    def nbytes(self) -> int:
        """Bytes of the whole buffer."""
        return self.frames_nbytes + self.host_nbytes


class FrameReplayBuffer:
    """Circular replay of image transitions storing each frame once; samples like ReplayBuffer."""

    def __init__(
        self,
        capacity: int,
        obs_shape: tuple[int, ...],
        obs_dtype: np.dtype | str = np.uint8,
        device: torch.device | str = "cpu",
        seed: int = 0,
        num_envs: int = 1,
        frame_stack: int = 0,
        n_step: int = 1,
        gamma: float = 0.99,
    ) -> None:
        if n_step < 1:
            raise QnormError(f"n_step must be positive, got {n_step}")
        self.n_step, self.gamma = int(n_step), float(gamma)
        self.layout = layout = FrameLayout(
            int(capacity), tuple(obs_shape), np.dtype(obs_dtype), int(num_envs), int(frame_stack)
        )
        self.capacity, self.obs_shape = layout.capacity, layout.obs_shape
        self.obs_dtype, self.num_envs = layout.obs_dtype, layout.num_envs
        self.frame_stack, self.window = layout.frame_stack, layout.window
        self.device = torch.device(device)
        self._check_memory()
        slots, frame_shape = layout.slots, layout.frame_shape
        dtype = torch.from_numpy(np.empty(0, dtype=self.obs_dtype)).dtype
        # empty, not zeros: the pages of a large ring are committed as frames arrive
        self.frames = torch.empty((slots, *frame_shape), dtype=dtype, device=self.device)
        self._frames_host = self.frames.numpy() if self.device.type == "cpu" else None
        # per-transition records live in host memory on every device: each add writes a few
        # scalars (cheap in numpy, a transfer each on a GPU) and a sample reads a few hundred
        self.actions = torch.zeros(slots, dtype=torch.int64)
        self.rewards = torch.zeros(slots, dtype=torch.float32)
        self.terminated = torch.zeros(slots, dtype=torch.bool)
        self.truncated = torch.zeros(slots, dtype=torch.bool)
        self._records = {name: getattr(self, name).numpy() for name in RECORDS}
        self._init_sampleable(slots)
        self._init_rings(layout.ring_sizes, frame_shape)
        self.generator = torch.Generator().manual_seed(seed)  # host draws: same on every device

    def _init_sampleable(self, slots: int) -> None:
        """The sampleable slots: the first ``_count`` entries of ``_valid``, in any order,
        and each slot's index there (-1 when not sampleable), so adding and dropping one
        is O(1)."""
        self._valid = torch.empty(slots, dtype=torch.int64)
        self._valid_host = self._valid.numpy()
        self._where = np.full(slots, -1, dtype=np.int64)
        self._where_t = torch.from_numpy(self._where)  # the same memory, for sampling
        self._count = 0

    def _init_rings(self, sizes: tuple[int, ...], frame_shape: tuple[int, ...]) -> None:
        """Each env's ring of frames (its size and first slot) and its stream's state."""
        self._sizes = sizes
        self._bases = tuple(int(b) for b in np.cumsum((0, *sizes[:-1])))
        self._sizes_t = torch.tensor(sizes, dtype=torch.int64)
        self._bases_t = torch.tensor(self._bases, dtype=torch.int64)
        self._offsets = torch.arange(-self.window, 1, dtype=torch.int64)
        self._all_envs = np.arange(self.num_envs, dtype=np.int64)
        self._written = [0] * self.num_envs  # frames each env's stream has written so far
        self._starts = np.ones(self.num_envs, dtype=bool)  # its next transition starts an episode
        self._last = np.zeros((self.num_envs, *frame_shape), dtype=self.obs_dtype)

    def _check_memory(self) -> None:
        what = f"a frame replay buffer of {self.capacity:,} transitions"
        if self.device.type == "cpu":
            check_fits(self.layout.nbytes, self.device, what)
        else:
            check_fits(self.layout.frames_nbytes, self.device, f"the frames of {what}")
            check_fits(self.layout.host_nbytes, "cpu", f"the records of {what}")

    @staticmethod
    def nbytes_for(
        capacity: int,
        obs_shape: tuple[int, ...],
        obs_dtype: np.dtype | str = np.uint8,
        num_envs: int = 1,
        frame_stack: int = 0,
    ) -> int:
        """Bytes a buffer with these arguments takes, without allocating it."""
        layout = FrameLayout(
            int(capacity), tuple(obs_shape), np.dtype(obs_dtype), int(num_envs), int(frame_stack)
        )
        return layout.nbytes

    @property
    def nbytes(self) -> int:
        """Bytes of all storage, counted at full capacity (frames are committed as they fill)."""
        arrays = (self.frames, self.actions, self.rewards, self.terminated, self.truncated)
        return (
            sum(t.nbytes for t in arrays)
            + self._valid.nbytes
            + self._where.nbytes
            + self._last.nbytes
        )

    @property
    def bytes_per_transition(self) -> float:
        """Storage bytes per transition of capacity."""
        return self.nbytes / self.capacity

    def __len__(self) -> int:
        return self._count

    def add(self, obs, actions, rewards, next_obs, terminated, truncated, env_ids=None) -> None:
        """Store one transition per env in ``env_ids`` (default ``range(n)``), oldest overwritten.

        Rows are batched on a leading dim ``n`` (or one unbatched transition). An env's
        transitions must follow each other: obs is the previous next_obs of that env, unless
        its previous transition ended the episode (terminated or truncated).
        """
        obs, actions, rewards, next_obs, terminated, truncated, ids = self._rows(
            obs, actions, rewards, next_obs, terminated, truncated, env_ids
        )
        newest = next_obs[:, -1] if self.frame_stack else next_obs
        starts = self._starts[ids].tolist()
        self._check_continuity(obs, ids, starts)
        slots = np.empty(len(ids), dtype=np.int64)
        for row, (env, start) in enumerate(zip(ids.tolist(), starts, strict=True)):
            if start:
                first = obs[row].reshape(self.window, *self.layout.frame_shape)
                self._put_frames(np.array([self._advance(env) for _ in first]), first)
            slots[row] = self._advance(env)
        self._put_frames(slots, newest)
        records = self._records
        records["actions"][slots] = actions
        records["rewards"][slots] = rewards
        records["terminated"][slots] = terminated
        records["truncated"][slots] = truncated
        for slot in slots.tolist():
            self._insert(slot)
        self._last[ids] = newest
        self._starts[ids] = terminated | truncated

    def _rows(self, obs, actions, rewards, next_obs, terminated, truncated, env_ids):
        """The inputs as checked numpy arrays with a leading row dim, and the rows' env ids."""
        names = ("obs", "actions", "rewards", "next_obs", "terminated", "truncated")
        columns = [_as_array(v) for v in (obs, actions, rewards, next_obs, terminated, truncated)]
        unbatched = columns[0].shape == self.obs_shape
        if unbatched:
            columns = [values[None] for values in columns]
        n = columns[0].shape[0] if columns[0].ndim else 0
        for name, values in zip(names, columns, strict=True):
            expected = (n, *self.obs_shape) if name.endswith("obs") else (n,)
            if values.shape != expected:
                raise QnormError(
                    f"transition field {name!r} has shape {values.shape}, expected {expected}"
                )
        for i in (0, 3):  # obs, next_obs
            values = columns[i]
            if values.dtype != self.obs_dtype:
                if not _castable(values.dtype, self.obs_dtype):
                    raise QnormError(
                        f"transition field {names[i]!r} has dtype {values.dtype}, "
                        f"expected {self.obs_dtype}"
                    )
                columns[i] = values.astype(self.obs_dtype)  # frames are compared as bytes
        if columns[1].dtype.kind not in "iu":
            raise QnormError(f"actions must be integers, got dtype {columns[1].dtype}")
        columns[4] = columns[4].astype(bool, copy=False)
        columns[5] = columns[5].astype(bool, copy=False)
        return (*columns, self._env_ids(env_ids, n, unbatched))

    def _env_ids(self, env_ids, n: int, unbatched: bool) -> np.ndarray:
        """Which env's stream each row belongs to, checked."""
        if env_ids is None:
            if n > self.num_envs:
                raise QnormError(
                    f"cannot add {n} transitions at once to a buffer of {self.num_envs} env "
                    "streams (one row per env); pass env_ids"
                )
            return self._all_envs[:n]
        ids = _as_array(env_ids)
        if unbatched:
            ids = ids.reshape(-1)
        if ids.shape != (n,) or ids.dtype.kind not in "iu":
            raise QnormError(
                f"env_ids must be {n} integer env indices, got shape {ids.shape} "
                f"and dtype {ids.dtype}"
            )
        listed = ids.tolist()
        if any(not 0 <= env < self.num_envs for env in listed):
            raise QnormError(f"env_ids must lie in [0, {self.num_envs}), got {listed}")
        if len(set(listed)) != n:
            raise QnormError(f"env_ids name an env twice: {listed}")
        return ids.astype(np.int64, copy=False)

    def _check_continuity(self, obs: np.ndarray, ids: np.ndarray, starts: list[bool]) -> None:
        """Each env whose episode goes on must add an obs ending with the frame it stored last."""
        current = obs[:, -1] if self.frame_stack else obs
        for row, (env, start) in enumerate(zip(ids.tolist(), starts, strict=True)):
            # comparing bytes is a memcmp: several times cheaper than numpy's != and any()
            if not start and current[row].tobytes() != self._last[env].tobytes():
                raise QnormError(
                    f"the observation added for env {env} is not the next_obs stored last for "
                    "it; pass env_ids when adding the rows of some envs only"
                )

    def _advance(self, env: int) -> int:
        """The slot of ``env``'s next frame; transitions that lose a frame to it stop counting."""
        n = self._written[env]
        self._written[env] = n + 1
        base, size = self._bases[env], self._sizes[env]
        slot = base + n % size
        self._drop(slot)  # the transition whose newest frame this slot held
        # the one whose oldest frame it held (those in between already lost an older frame)
        self._drop(base + (n + self.window) % size)
        return slot

    def _put_frames(self, slots: np.ndarray, frames: np.ndarray) -> None:
        if self._frames_host is not None:  # CPU: numpy writes into the tensor's memory
            self._frames_host[slots] = frames
        else:
            values = torch.from_numpy(np.ascontiguousarray(frames, dtype=self.obs_dtype))
            self.frames[torch.from_numpy(slots).to(self.device)] = values.to(self.device)

    def _insert(self, slot: int) -> None:
        self._valid_host[self._count] = slot
        self._where[slot] = self._count
        self._count += 1

    def _drop(self, slot: int) -> None:
        index = self._where[slot]
        if index < 0:
            return
        self._count -= 1
        moved = self._valid_host[self._count]  # the last entry fills the hole
        self._valid_host[index] = moved
        self._where[moved] = index
        self._where[slot] = -1

    def end_episodes(self) -> None:
        """Every env's next transition starts a new episode (envs reset before theirs ended).

        The streams' last transitions keep their next_obs; no stack reaches across the cut,
        since a new episode writes its whole first observation.
        """
        self._starts[:] = True

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Everything but the frames, for a training-state snapshot (``agents.frame_store``)."""
        return {
            **{name: getattr(self, name) for name in RECORDS},
            "valid": self._valid[: self._count],
            "where": torch.from_numpy(self._where),
            "last": torch.from_numpy(self._last),
            "starts": torch.from_numpy(self._starts),
            "generator": self.generator.get_state(),
        }

    def state(self) -> dict:
        """The layout and the streams' frame counts, for a training-state snapshot."""
        return {"layout": self._layout_record(), "written": list(self._written)}

    def load_state(self, tensors: dict[str, torch.Tensor], state: dict) -> None:
        """Restore what ``state_tensors`` and ``state`` saved (the frames are read separately)."""
        if state.get("layout") != self._layout_record():
            raise QnormError(
                f"the snapshot's frame replay {state.get('layout')} does not fit this run's "
                f"{self._layout_record()}"
            )
        targets = {
            **{name: getattr(self, name) for name in RECORDS},
            "where": torch.from_numpy(self._where),
            "last": torch.from_numpy(self._last),
            "starts": torch.from_numpy(self._starts),
        }
        for name, target in targets.items():
            if tuple(tensors[name].shape) != tuple(target.shape):
                raise QnormError(
                    f"the snapshot's replay field {name!r} has shape {tuple(tensors[name].shape)}"
                )
            target.copy_(tensors[name])
        valid = tensors["valid"]
        self._count = len(valid)
        self._valid[: self._count] = valid
        self._written = [int(n) for n in state["written"]]
        self.generator.set_state(tensors["generator"])

    def _layout_record(self) -> dict:
        layout = self.layout
        return {
            "capacity": layout.capacity,
            "obs_shape": list(layout.obs_shape),
            "obs_dtype": layout.obs_dtype.name,
            "num_envs": layout.num_envs,
            "frame_stack": layout.frame_stack,
        }

    def frame_counts(self) -> list[int]:
        """Frames each env's stream has written so far."""
        return list(self._written)

    def slots_written_since(self, counts: list[int]) -> np.ndarray:
        """The frame slots written since the streams had written ``counts`` frames."""
        parts = []
        for env, (before, now) in enumerate(zip(counts, self._written, strict=True)):
            n = min(now - before, self._sizes[env])
            parts.append(self._bases[env] + np.arange(now - n, now) % self._sizes[env])
        return np.concatenate(parts)

    def sample(self, batch_size: int) -> Batch:
        """``batch_size`` transitions drawn uniformly with replacement."""
        return self.sample_batches(1, batch_size).minibatch(0)

    def sample_batches(self, num_batches: int, batch_size: int) -> Batch:
        """``num_batches`` minibatches at once; fields shaped [num_batches, batch_size, ...]."""
        if batch_size > self._count:
            raise QnormError(
                f"cannot sample {batch_size} transitions from a buffer holding {self._count}"
            )
        picks = torch.randint(0, self._count, (num_batches * batch_size,), generator=self.generator)
        slots = self._valid[picks]
        shape = (num_batches, batch_size)
        returns = self._n_step_returns(slots) if self.n_step > 1 else None
        last = slots if returns is None else returns.last  # whose next_obs closes the target
        windows = self._windows(slots).to(self.device, non_blocking=True)
        next_windows = windows if returns is None else self._windows(last).to(self.device)

        def stacks(frame_slots: torch.Tensor) -> torch.Tensor:
            # index_select copies whole rows; plain indexing on CPU went element by element
            # and was about 9x slower for 84x84 uint8 frames
            rows = self.frames.index_select(0, frame_slots.reshape(-1))
            return rows.view(*shape, *self.obs_shape)

        def record(values: torch.Tensor, dtype: torch.dtype, rows=slots) -> torch.Tensor:
            return values[rows].to(self.device, dtype).view(shape)

        rewards = record(self.rewards, torch.float32)
        if returns is not None:
            rewards = returns.rewards.to(self.device).view(shape)
        return Batch(
            stacks(windows[:, :-1]),
            record(self.actions, torch.int64),
            rewards,
            stacks(next_windows[:, 1:]),
            record(self.terminated, torch.float32, last),
            record(self.truncated, torch.float32, last),
            None if returns is None else returns.discounts.to(self.device).view(shape),
        )

    def _n_step_returns(self, slots: torch.Tensor):
        """Returns of up to ``n_step`` rewards from the transitions at ``slots``."""
        return n_step_returns(slots, self._successor, self.rewards, self.n_step, self.gamma)

    def _successor(self, slots: torch.Tensor) -> torch.Tensor:
        """The slot of the same episode's next transition, or -1 where none is stored.

        Within an episode it owns the stream's next slot. After a stream's newest transition
        that slot holds its oldest frame, whose transition was dropped when the frames
        before it were overwritten; after an episode's last transition it holds the next
        episode's first frame, which no transition owns.
        """
        env = torch.searchsorted(self._bases_t, slots, right=True) - 1
        base, size = self._bases_t[env], self._sizes_t[env]
        following = base + (slots - base + 1) % size
        return torch.where(self._where_t[following] >= 0, following, -1)

    def _windows(self, slots: torch.Tensor) -> torch.Tensor:
        """[M, window + 1] frame slots per transition, oldest first: obs is [:-1], next_obs [1:]."""
        env = torch.searchsorted(self._bases_t, slots, right=True) - 1
        base, size = self._bases_t[env, None], self._sizes_t[env, None]
        return base + (slots[:, None] - base + self._offsets) % size


def _castable(given: np.dtype, stored: np.dtype) -> bool:
    """Whether observations of dtype ``given`` may be stored as ``stored`` (not float into int)."""
    both_integers = given.kind in "iu" and stored.kind in "iu"
    return both_integers or np.can_cast(given, stored, casting="same_kind")


def _as_array(values) -> np.ndarray:
    if type(values) is np.ndarray:  # the common case, checked first: add runs every env step
        return values
    if torch.is_tensor(values):
        return values.detach().cpu().numpy()
    return np.asarray(values)
