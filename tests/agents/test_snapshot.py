"""Training-state snapshots on disk: atomic replacement, a full disk, a crash between renames."""

from __future__ import annotations

import errno

import pytest
import torch

import agents.snapshot as snapshot_module
from agents.snapshot import read_snapshot, snapshot_dir, write_snapshot
from qnorm import QnormError


def test_a_snapshot_round_trips_exactly(tmp_path):
    tensors = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([True, False])}
    write_snapshot(tmp_path, tensors, {"step": 7, "nested": {"x": [1, 2]}})
    back, state = read_snapshot(tmp_path)
    assert state == {"format_version": 1, "step": 7, "nested": {"x": [1, 2]}}
    assert back.keys() == tensors.keys() and all((back[k] == tensors[k]).all() for k in back)


def test_a_full_disk_leaves_the_previous_snapshot_whole(tmp_path, monkeypatch):
    write_snapshot(tmp_path, {"w": torch.ones(3)}, {"step": 1})

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(snapshot_module, "save_file", full_disk)
    with pytest.raises(QnormError, match="No space left on device; the previous snapshot is"):
        write_snapshot(tmp_path, {"w": torch.zeros(3)}, {"step": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]  # no temporary left
    tensors, state = read_snapshot(tmp_path)
    assert state["step"] == 1 and (tensors["w"] == 1).all()


def test_a_crash_between_the_renames_keeps_the_last_snapshot(tmp_path):
    write_snapshot(tmp_path, {"w": torch.ones(3)}, {"step": 1})
    snapshot_dir(tmp_path).rename(tmp_path / ".state.old")  # the state a crash there leaves
    assert read_snapshot(tmp_path)[1]["step"] == 1
    snapshot_dir(tmp_path).rename(tmp_path / ".state.old")
    write_snapshot(tmp_path, {"w": torch.zeros(3)}, {"step": 2})  # never deletes the only one
    assert read_snapshot(tmp_path)[1]["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]
