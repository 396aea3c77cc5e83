"""Bad input to ``train`` is one QnormError, raised before anything is written to disk."""

import os

import pytest
import torch
from train_helpers import tiny_config as shared_tiny_config

from agents.training import train
from qnorm import QnormError


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    """Run from an empty directory, so a default ``runs/`` directory would show up too."""
    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)


def tiny_config(run_dir, **overrides):
    return shared_tiny_config(run_dir, 300, **{"dqn__buffer_size": 1000, **overrides})


def snapshot(root):
    """Every path under ``root`` with the bytes of each file."""
    return {
        os.path.relpath(os.path.join(d, name), root): (
            open(os.path.join(d, name), "rb").read() if name in files else None
        )
        for d, dirs, files in os.walk(root)
        for name in dirs + files
    }


def assert_error_and_nothing_written(tmp_path, config, match):
    before = snapshot(tmp_path)
    with pytest.raises(QnormError, match=match) as exc:
        train(config)
    assert "\n" not in str(exc.value)
    assert snapshot(tmp_path) == before
    return exc


@pytest.mark.parametrize("run_dir", ["run", ""])  # explicit, and the default runs/<...>
@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"run__env_id": "NoSuchEnv-v0"}, "unknown environment id"),
        ({"run__env_id": "Pendulum-v1"}, "Discrete"),
        ({"network__norm": "batchnorm", "dqn__batch_size": 1}, "batch size 1"),
        ({"run__total_timesteps": 0}, "total_timesteps"),
        ({"run__total_timesteps": -100}, "total_timesteps"),
        ({"dqn__buffer_size": 4}, "smaller than batch_size"),
        ({"network__norm": "bogus"}, "unknown norm"),
        ({"dqn__adam_beta1": 1.0}, "adam_beta1"),
        ({"dqn__weight_decay": -0.1}, "weight_decay"),
    ],
)
def test_bad_config_writes_nothing(tmp_path, run_dir, overrides, match):
    config = tiny_config(tmp_path / run_dir if run_dir else "", **overrides)
    assert_error_and_nothing_written(tmp_path, config, match)
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_writes_nothing(tmp_path):
    config = tiny_config(tmp_path / "run", run__device="cuda")
    assert_error_and_nothing_written(tmp_path, config, "cuda")
    assert not (tmp_path / "run").exists()


def test_existing_non_empty_run_dir_is_left_untouched(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / "final").mkdir(parents=True)
    (run / "config.json").write_text('{"an": "earlier run"}')
    (run / "checkpoints" / "final" / "model.safetensors").write_bytes(b"\x00\x01earlier")
    mtimes = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    config = tiny_config(run)
    exc = assert_error_and_nothing_written(tmp_path, config, "not empty")
    assert str(run) in str(exc.value)
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == mtimes


def test_run_dir_that_is_a_file_is_left_untouched(tmp_path):
    (tmp_path / "run").write_text("not a directory")
    assert_error_and_nothing_written(tmp_path, tiny_config(tmp_path / "run"), "already exists")


def test_unwritable_run_dir(tmp_path):
    (tmp_path / "afile").write_text("a regular file")
    config = tiny_config(tmp_path / "afile" / "run")
    exc = assert_error_and_nothing_written(tmp_path, config, "cannot write the run directory")
    assert "afile" in str(exc.value)


def test_existing_empty_run_dir_is_used(tmp_path):
    (tmp_path / "run").mkdir()
    result = train(tiny_config(tmp_path / "run"))
    assert result.run_dir == tmp_path / "run"
    assert (tmp_path / "run" / "config.json").is_file()
    assert (tmp_path / "run" / "checkpoints" / "final" / "model.safetensors").is_file()


def test_default_run_dir_is_under_runs(tmp_path):
    result = train(tiny_config(""))
    assert result.run_dir.parent == tmp_path.joinpath("runs").relative_to(tmp_path)
    assert result.run_dir.name.startswith("CartPole-v1__none__0__")
    assert (tmp_path / result.run_dir / "checkpoints" / "final" / "config.json").is_file()
