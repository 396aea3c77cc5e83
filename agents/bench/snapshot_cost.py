"""What a training-state snapshot costs: seconds, bytes written and extra peak memory.

Two buffers, each full: CartPole's (100k vector transitions) and an Atari-sized frame replay
(1M transitions of 4 stacked 84x84 uint8 frames). For the frame replay the first snapshot
writes every frame; later ones write the chunks changed since (``--snapshot-new`` frames,
``state_freq``'s default), which is what a long run pays every 50k steps.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from agents.frame_replay import FrameReplayBuffer
from agents.frame_store import FrameSnapshots, frames_dir
from agents.replay import ReplayBuffer
from agents.snapshot import prefixed, snapshot_dir, write_snapshot

ATARI_STACK, ATARI_FRAME = 4, (84, 84)
EPISODE = 1000  # steps per synthetic episode


def _rss() -> int:
    """Resident bytes now; the peak since is then read by ``_peak_rss`` (Linux)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # resets the peak (VmHWM) to the current resident size
    return _status_kb("VmRSS") * 1024


def _peak_rss() -> int:
    return _status_kb("VmHWM") * 1024


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _written_bytes(run_dir: Path) -> int:
    return sum(p.stat().st_size for p in snapshot_dir(run_dir).iterdir())


def cartpole_buffer(capacity: int) -> ReplayBuffer:
    """A full CartPole-sized replay buffer (4 float32 features)."""
    buffer = ReplayBuffer(capacity, (4,), np.float32, "cpu", 0)
    rng = np.random.default_rng(0)
    for start in range(0, capacity, 10_000):
        n = min(10_000, capacity - start)
        obs = rng.standard_normal((n, 4), dtype=np.float32)
        buffer.add(obs, rng.integers(2, size=n), np.ones(n), obs, np.zeros(n), np.zeros(n))
    return buffer


def atari_buffer(capacity: int) -> FrameReplayBuffer:
    """A full Atari-sized frame replay: one env, 4-frame stacks, episodes of EPISODE steps."""
    buffer = FrameReplayBuffer(capacity, (ATARI_STACK, *ATARI_FRAME), np.uint8, frame_stack=4)
    add_atari_frames(buffer, capacity)
    return buffer


def add_atari_frames(buffer: FrameReplayBuffer, steps: int, start: int = 0) -> None:
    """Transitions ``start`` to ``start + steps``: the frames of step t are pool[t:t + 5]."""
    pool = np.random.default_rng(0).integers(0, 256, (256, *ATARI_FRAME), dtype=np.uint8)
    for step in range(start, start + steps):
        frames = pool[np.arange(step, step + ATARI_STACK + 1) % len(pool)]
        ended = (step + 1) % EPISODE == 0
        buffer.add(frames[:-1], 0, 0.0, frames[1:], ended, False)


def time_vector_snapshot(buffer: ReplayBuffer, run_dir: Path) -> tuple[float, int, int]:
    """Seconds, bytes written and extra peak memory of one snapshot of ``buffer``."""
    base = _rss()
    start = time.perf_counter()
    write_snapshot(run_dir, prefixed("replay", buffer.state_tensors()), buffer.state())
    seconds = time.perf_counter() - start
    return seconds, _written_bytes(run_dir), max(0, _peak_rss() - base)


def time_frame_snapshot(frames: FrameSnapshots, run_dir: Path) -> tuple[float, int, int]:
    """Seconds, bytes written (records and new chunks) and extra peak memory of one snapshot."""
    buffer = frames.buffer
    before = set(frames_dir(run_dir).iterdir()) if frames_dir(run_dir).is_dir() else set()
    base = _rss()
    start = time.perf_counter()
    state = {**buffer.state(), "frames": frames.write()}
    write_snapshot(run_dir, prefixed("replay", buffer.state_tensors()), state)
    frames.committed()
    seconds = time.perf_counter() - start
    new_chunks = set(frames_dir(run_dir).iterdir()) - before
    written = _written_bytes(run_dir) + sum(p.stat().st_size for p in new_chunks)
    return seconds, written, max(0, _peak_rss() - base)


def report(
    out, cartpole: int, atari: int, new_frames: int, repeats: int, where: str | None
) -> None:
    """Print the cost of CartPole and Atari-sized snapshots (medians over ``repeats``)."""
    root = Path(tempfile.mkdtemp(prefix="qnorm-snapshot-bench-", dir=where))
    try:
        run_dir = root / "cartpole"
        run_dir.mkdir()
        buffer = cartpole_buffer(cartpole)
        timings = [time_vector_snapshot(buffer, run_dir) for _ in range(repeats)]
        _line(out, f"CartPole, {cartpole:,} transitions", timings)
        del buffer
        run_dir = root / "atari"
        run_dir.mkdir()
        start = time.perf_counter()
        frames_buffer = atari_buffer(atari)
        out(
            f"Atari-sized frame replay: {atari:,} transitions, {frames_buffer.nbytes / 1e9:.2f} "
            f"GB ({frames_buffer.bytes_per_transition:,.0f} B per transition), filled in "
            f"{time.perf_counter() - start:.0f} s"
        )
        frames = FrameSnapshots(run_dir, frames_buffer)
        _line(out, "  first snapshot (every frame)", [time_frame_snapshot(frames, run_dir)])
        later = []
        for repeat in range(repeats):
            add_atari_frames(frames_buffer, new_frames, start=atari + repeat * new_frames)
            later.append(time_frame_snapshot(frames, run_dir))
        _line(out, f"  after {new_frames:,} more frames", later)
        on_disk = sum(p.stat().st_size for p in frames_dir(run_dir).iterdir())
        out(f"  frames on disk after pruning: {on_disk / 1e9:.2f} GB")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _line(out, what: str, timings: list[tuple[float, int, int]]) -> None:
    seconds, written, extra = (float(np.median(column)) for column in zip(*timings, strict=True))
    out(
        f"{what}: {seconds * 1e3:,.1f} ms, {written / 1e6:,.1f} MB written, "
        f"{extra / 1e6:,.1f} MB extra peak memory (median of {len(timings)})"
    )
