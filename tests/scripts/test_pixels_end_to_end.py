"""Image envs end to end, as a user runs them: train.py on MinAtar and Atari, then evaluate.py.

Each family's extra is installed by the test set-up (``make test``); without it these tests
skip and say which ``pip install`` would run them.
"""

from __future__ import annotations

import json
import shlex

import pytest
from script_helpers import EVALUATE, TRAIN, assert_clean_success, run_script, run_scripts
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

# A few thousand MinAtar steps with every output: evaluation, checkpoints, TensorBoard.
MINATAR_SHORT = shlex.split(
    "--env-id MinAtar/Breakout-v1 --total-timesteps 3000 --learning-starts 500 "
    "--buffer-size 3000 --train-freq 4 --eval-freq 1500 --eval-episodes 2"
)
# Atari is about 100x costlier per step on a CPU: a short run that still learns and saves.
ATARI_SHORT = shlex.split(
    "--env-id ALE/Pong-v5 --total-timesteps 1200 --learning-starts 400 --buffer-size 2000 "
    "--batch-size 8 --train-freq 8 --eval-freq 0 --conv-channels 8 8 --conv-kernels 8 4 "
    "--conv-strides 4 2 --hidden-sizes 32"
)


def needs(module: str, extra: str) -> None:
    pytest.importorskip(module, reason=f"needs the {extra} extra: pip install -e '.[{extra}]'")


def scalars(run_dir, tag: str) -> list[float]:
    events = EventAccumulator(str(run_dir)).Reload()
    return [event.value for event in events.Scalars(tag)] if tag in events.Tags()["scalars"] else []


@pytest.fixture(scope="module")
def minatar_runs(tmp_path_factory):
    """One MinAtar run per norm, trained side by side."""
    needs("minatar", "minatar")
    root = tmp_path_factory.mktemp("minatar")
    jobs = {
        norm: ((TRAIN, *MINATAR_SHORT, "--norm", norm, "--run-dir", root / norm), {})
        for norm in ("batchnorm", "layernorm")
    }
    for ran in run_scripts(jobs).values():
        assert_clean_success(ran)
    return root


@pytest.mark.parametrize("norm", ["batchnorm", "layernorm"])
def test_minatar_trains_logs_checkpoints_and_evaluates(minatar_runs, norm):
    run_dir = minatar_runs / norm
    config = json.loads((run_dir / "checkpoints" / "final" / "config.json").read_text())
    assert config["network"]["kind"] == "conv"
    assert config["network"]["channels"] == [16]  # the MinAtar preset
    assert config["network"]["channels_last"] is True
    assert config["observation_shape"] == [10, 10, 4]
    assert config["observation_dtype"] == "bool"
    assert config["train_config"]["dqn"]["optimizer"] == "rmsprop"
    assert len(scalars(run_dir, "eval/mean_return")) == 2
    assert scalars(run_dir, "losses/td_loss")
    ran = run_script(EVALUATE, run_dir, "--json", "--episodes", "2")
    assert_clean_success(ran)
    summary = json.loads(ran.stdout)
    assert summary["env_id"] == "MinAtar/Breakout-v1"
    assert summary["norm"] == norm
    assert len(summary["returns"]) == 2


def test_minatar_video(minatar_runs, tmp_path):
    pytest.importorskip("moviepy", reason="video needs the video extra")
    ran = run_script(
        EVALUATE, minatar_runs / "batchnorm", "--episodes", "1", "--video", tmp_path / "v"
    )
    assert_clean_success(ran)
    assert list((tmp_path / "v").glob("*.mp4"))


def test_atari_trains_checkpoints_and_evaluates_full_games_with_video(tmp_path):
    needs("ale_py", "atari")
    needs("cv2", "atari")
    run_dir = tmp_path / "pong"
    ran = run_script(TRAIN, *ATARI_SHORT, "--norm", "batchnorm", "--run-dir", run_dir)
    assert_clean_success(ran)
    config = json.loads((run_dir / "checkpoints" / "final" / "config.json").read_text())
    assert config["observation_shape"] == [4, 84, 84]
    assert config["observation_dtype"] == "uint8"
    assert config["network"]["obs_scale"] == pytest.approx(1 / 255)
    assert scalars(run_dir, "losses/td_loss")
    ran = run_script(EVALUATE, run_dir, "--json", "--episodes", "1", "--video", tmp_path / "video")
    assert_clean_success(ran)
    summary = json.loads(ran.stdout)
    # A full game of Pong ends at 21 points for one side: the raw score, not clipped lives.
    (score,) = summary["returns"]
    assert -21 <= score <= 21 and score == int(score)
    assert summary["lengths"][0] > 200
    assert list((tmp_path / "video").glob("*.mp4"))
