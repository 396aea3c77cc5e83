"""Frame replay snapshots: exact round trips, only changed chunks rewritten, nothing lost on a
failed write, and damaged chunk files refused."""

from __future__ import annotations

import errno

import numpy as np
import pytest
import torch
from test_frame_replay import collect, make_buffer

import agents.frame_store as frame_store
from agents.frame_store import FrameSnapshots, frames_dir
from qnorm import QnormError

CAPACITY = 60


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of a few frames, so a small buffer spans many chunk files."""
    monkeypatch.setattr(frame_store, "CHUNK_BYTES", 8 * 30)  # 8 frames of 6x5 uint8 per chunk


def filled(kind: str, steps: int, seed: int = 0):
    envs, buffer = make_buffer(kind, CAPACITY, seed=seed)
    collect(buffer, envs, steps, seed=seed)
    return buffer


def snapshot_of(buffer, run_dir, frames: FrameSnapshots | None = None):
    """What the trainer writes: the records, the state and the changed frames, then commit."""
    frames = frames or FrameSnapshots(run_dir, buffer)
    tensors = {k: v.clone() for k, v in buffer.state_tensors().items()}
    state = {**buffer.state(), "frames": frames.write()}
    frames.committed()
    return frames, tensors, state


def restored(kind: str, run_dir, tensors, state, seed: int = 0):
    _, buffer = make_buffer(kind, CAPACITY, seed=seed + 1)  # another seed: all of it restored
    buffer.load_state(tensors, state)
    frames = FrameSnapshots(run_dir, buffer)
    frames.restore(state["frames"])
    return buffer, frames


def assert_same_samples(a, b, draws: int = 3):
    for _ in range(draws):
        pairs = zip(
            a.sample_batches(2, 16).tensors(), b.sample_batches(2, 16).tensors(), strict=True
        )
        for x, y in pairs:
            assert torch.equal(x, y)


def continue_streams(buffer, steps: int, seed: int = 7) -> None:
    """Add ``steps`` more transitions per env, each continuing its env's stream."""
    rng = np.random.default_rng(seed)
    zeros = np.zeros(buffer.num_envs, dtype=bool)
    for step in range(steps):
        last = buffer._last.copy()
        new = rng.integers(0, 2 if buffer.obs_dtype.kind == "b" else 256, last.shape)
        new = new.astype(buffer.obs_dtype)
        if buffer.frame_stack:
            obs = np.repeat(last[:, None], buffer.frame_stack, axis=1)
            next_obs = np.concatenate([obs[:, 1:], new[:, None]], axis=1)
        else:
            obs, next_obs = last, new
        rewards = np.full(buffer.num_envs, 1e6 + step)
        buffer.add(obs, np.zeros(buffer.num_envs, int), rewards, next_obs, zeros, zeros)


@pytest.mark.parametrize("kind", ["atari", "minatar"])
def test_a_restored_frame_replay_samples_and_grows_exactly_like_the_original(
    kind, tmp_path, small_chunks
):
    original = filled(kind, 90)  # past the capacity: the rings have wrapped
    _, tensors, state = snapshot_of(original, tmp_path)
    copy, _ = restored(kind, tmp_path, tensors, state)
    assert len(copy) == len(original)
    assert_same_samples(original, copy)
    for buffer in (original, copy):  # the streams continue where the snapshot left them
        continue_streams(buffer, 25)
    assert_same_samples(original, copy)


def test_a_second_snapshot_rewrites_only_the_chunks_written_since(tmp_path, small_chunks):
    buffer = filled("atari", 90)
    frames, _, first = snapshot_of(buffer, tmp_path)
    before = dict(first["frames"]["files"])
    assert len(before) > 6  # many chunks, so "only some" means something
    continue_streams(buffer, 3)  # three new frames per env ring: one or two chunks each
    _, _, second = snapshot_of(buffer, tmp_path, frames)
    after = second["frames"]["files"]
    changed = {k for k in after if after[k] != before.get(k)}
    assert 1 <= len(changed) <= 4, changed
    on_disk = sorted(p.name for p in frames_dir(tmp_path).iterdir())
    assert on_disk == sorted(after.values())  # older versions pruned once committed


def test_a_snapshot_that_never_lands_leaves_the_previous_one_readable(tmp_path, small_chunks):
    buffer = filled("atari", 90)
    frames, tensors, state = snapshot_of(buffer, tmp_path)
    continue_streams(buffer, 40)
    frames.write()  # new chunk files, but no state.json names them: a crash right here
    copy, _ = restored("atari", tmp_path, tensors, state)
    continue_streams(copy, 40)
    assert_same_samples(buffer, copy)


def test_a_full_disk_while_writing_frames_keeps_the_previous_snapshot(
    tmp_path, small_chunks, monkeypatch
):
    buffer = filled("atari", 90)
    frames, tensors, state = snapshot_of(buffer, tmp_path)
    kept = sorted(p.name for p in frames_dir(tmp_path).iterdir())
    continue_streams(buffer, 40)  # most chunks change
    writes = []
    real_write = frame_store._write_array

    def fills_up(path, values):
        writes.append(path)
        if len(writes) == 3:
            path.write_bytes(b"\x93NUMPY")  # a partial file, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, values)

    monkeypatch.setattr(frame_store, "_write_array", fills_up)
    with pytest.raises(QnormError, match="No space left on device; the previous snapshot is"):
        frames.write()
    assert sorted(p.name for p in frames_dir(tmp_path).iterdir()) == kept
    copy, _ = restored("atari", tmp_path, tensors, state)
    continue_streams(copy, 40)
    assert_same_samples(buffer, copy)


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[:200]), "missing, truncated or corrupt"),
        (lambda p: p.unlink(), "missing, truncated or corrupt"),
        (lambda p: np.save(p, np.zeros((3, 2), np.float32)), "expected uint8"),
    ],
    ids=["truncated", "missing", "wrong-shape"],
)
def test_a_damaged_chunk_file_is_a_clear_error(tmp_path, small_chunks, damage, match):
    buffer = filled("atari", 90)
    _, tensors, state = snapshot_of(buffer, tmp_path)
    name = sorted(state["frames"]["files"].values())[0]
    damage(frames_dir(tmp_path) / name)
    with pytest.raises(QnormError, match=match):
        restored("atari", tmp_path, tensors, state)


def test_a_snapshot_of_another_layout_is_refused(tmp_path):
    buffer = filled("atari", 30)
    _, tensors, state = snapshot_of(buffer, tmp_path)
    _, other = make_buffer("atari", CAPACITY + 2)
    with pytest.raises(QnormError, match="does not fit this run's"):
        other.load_state(tensors, state)


def test_chunk_names_in_a_manifest_never_leave_the_frames_folder(tmp_path, small_chunks):
    buffer = filled("atari", 90)
    _, tensors, state = snapshot_of(buffer, tmp_path)
    outside = tmp_path / "outside.npy"
    np.save(outside, np.zeros(1))
    key = next(iter(state["frames"]["files"]))
    state["frames"]["files"][key] = str(outside)
    with pytest.raises(QnormError, match="missing, truncated or corrupt"):
        restored("atari", tmp_path, tensors, state)
