"""Training-state snapshots on disk: atomic replacement, a full disk, a crash between renames."""

from __future__ import annotations

import errno

import numpy as np
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


def test_a_network_gone_non_finite_never_replaces_the_last_good_snapshot(tmp_path):
    from test_training_semantics import make_trainer, tiny_config

    trainer = make_trainer(tiny_config(tmp_path, run__state_freq=100))
    try:
        trainer.run()  # ends with a snapshot of finite weights at step 400
        kept = (snapshot_dir(trainer.run_dir) / "tensors.safetensors").read_bytes()
        with torch.no_grad():
            next(trainer.agent.online.parameters())[0] = float("nan")
        obs = np.zeros((1, 4), dtype=np.float32)
        with pytest.raises(QnormError, match="no snapshot was written from it") as error:
            trainer.write_state(1, obs, np.ones(1, dtype=bool))
        assert f"the last good snapshot {snapshot_dir(trainer.run_dir)} (step 400)" in str(
            error.value
        )
        assert (snapshot_dir(trainer.run_dir) / "tensors.safetensors").read_bytes() == kept
    finally:
        trainer.envs.close()
