"""The frames of a frame replay buffer on disk, for training-state snapshots.

A buffer of a million Atari frames holds about 7 GB, and a snapshot every 50k steps changes
about 5% of it. So the frames are kept in chunk files (``.npy`` without pickle, about 64 MiB
each) in ``RUN_DIR/state.frames/``, and a snapshot writes only the chunks written to since the
last one, straight from the buffer's memory (no copy of the buffer, on the CPU; one chunk at a
time from a GPU). A chunk is never overwritten: each version gets a new file name, and the
snapshot's ``state.json`` names the file of every chunk. So until the new ``state.json`` is in
place, the previous snapshot's chunks are all still there; files no snapshot names any more are
deleted once the new one is.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from qnorm import QnormError

FRAMES_DIR = "state.frames"
CHUNK_BYTES = 64 * 2**20


def frames_dir(run_dir: Path) -> Path:
    """Where a run keeps the frame chunks of its snapshots."""
    return Path(run_dir) / FRAMES_DIR


def chunk_slots(frame_nbytes: int) -> int:
    """Frame slots per chunk file: about CHUNK_BYTES of frames."""
    return max(1, CHUNK_BYTES // max(1, frame_nbytes))


def chunks_of(slots: np.ndarray, per_chunk: int) -> set[int]:
    """The chunk indices holding any of ``slots``."""
    return {int(c) for c in np.unique(np.asarray(slots, dtype=np.int64) // per_chunk)}


class FrameStore:
    """Chunk files of one run's frames, written copy-on-write."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def write(self, frames: torch.Tensor, dirty: set[int], manifest: dict, per_chunk: int) -> dict:
        """Write the ``dirty`` chunks of ``frames`` as new files; the manifest naming them.

        ``manifest`` is the previous snapshot's (``{"sequence": n, "files": {chunk: name}}``,
        or empty). On an error the files written here are removed again and the previous
        snapshot's are untouched.
        """
        sequence = int(manifest.get("sequence", 0)) + 1
        files = dict(manifest.get("files", {}))
        written: list[Path] = []
        try:
            self.directory.mkdir(exist_ok=True)
            for index in sorted(dirty):
                path = self.directory / f"{index:06d}.{sequence:06d}.npy"
                chunk = frames[index * per_chunk : (index + 1) * per_chunk]
                written.append(path)
                _write_array(path, chunk.cpu().numpy())  # a view of the frames on the CPU
                files[str(index)] = path.name
        except OSError as exc:
            for path in written:
                path.unlink(missing_ok=True)
            raise QnormError(
                f"cannot write the replay frames in {self.directory}: {exc.strerror or exc}; "
                "the previous snapshot is intact"
            ) from None
        return {"sequence": sequence, "files": files, "chunk_slots": per_chunk}

    def read(self, frames: torch.Tensor, manifest: dict) -> None:
        """Fill ``frames`` from the chunk files ``manifest`` names, one chunk at a time."""
        per_chunk = int(manifest["chunk_slots"])
        dtype = torch.empty(0, dtype=frames.dtype).numpy().dtype
        for index, name in manifest["files"].items():
            start = int(index) * per_chunk
            rows = frames[start : start + per_chunk]
            path = self.directory / Path(name).name  # a bare name: never a path elsewhere
            chunk = _read_array(path, tuple(rows.shape), dtype)
            if rows.is_cpu:
                rows.numpy()[...] = chunk
            else:
                rows.copy_(torch.from_numpy(np.array(chunk)))

    def prune(self, manifest: dict) -> None:
        """Delete the chunk files ``manifest`` does not name (older versions, failed writes)."""
        if not self.directory.is_dir():
            return
        keep = set(manifest.get("files", {}).values())
        for path in self.directory.iterdir():
            if path.name not in keep:
                path.unlink(missing_ok=True)


def _write_array(path: Path, values: np.ndarray) -> None:
    """One ``.npy`` file, flushed to disk before it is named in a snapshot."""
    with open(path, "wb") as handle:
        np.lib.format.write_array(handle, values, allow_pickle=False)
        handle.flush()
        os.fsync(handle.fileno())


def _read_array(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A chunk file mapped read-only, checked against the shape and dtype it must have."""
    try:
        values = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise QnormError(f"replay frames {path} are missing, truncated or corrupt: {exc}") from None
    if values.shape != shape or values.dtype != dtype:
        raise QnormError(
            f"replay frames {path} hold {values.dtype} {values.shape}, expected {dtype} {shape}"
        )
    return values


class FrameSnapshots:
    """The frames of one run's frame replay in its snapshots: what is on disk, and the rest.

    ``write`` stores the chunks written to since the last committed snapshot and returns the
    manifest for the new ``state.json``; ``committed`` is called once that file is in place.
    """

    def __init__(self, run_dir: Path, buffer):
        self.store = FrameStore(frames_dir(run_dir))
        self.buffer = buffer
        self.per_chunk = chunk_slots(buffer.layout.frame_nbytes)
        self.manifest: dict = {}
        self.counts = [0] * buffer.num_envs  # the streams' frame counts at the last snapshot
        self._pending: tuple[dict, list[int]] | None = None

    def write(self) -> dict:
        """Write the changed chunks; the manifest naming every chunk of the new snapshot."""
        slots = self.buffer.slots_written_since(self.counts)
        dirty = chunks_of(slots, self.per_chunk)
        manifest = self.store.write(self.buffer.frames, dirty, self.manifest, self.per_chunk)
        self._pending = (manifest, self.buffer.frame_counts())
        return manifest

    def committed(self) -> None:
        """The snapshot naming the last ``write`` is in place: older chunk files can go."""
        if self._pending is not None:
            self.manifest, self.counts = self._pending
            self._pending = None
        self.store.prune(self.manifest)

    def restore(self, manifest: dict) -> None:
        """Read the frames a snapshot names back into the buffer."""
        self.store.read(self.buffer.frames, manifest)
        self.manifest = manifest
        self.per_chunk = int(manifest["chunk_slots"])
        self.counts = self.buffer.frame_counts()
