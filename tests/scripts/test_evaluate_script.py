"""scripts/evaluate.py run end to end in fresh processes on a real (tiny) trained run."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from script_helpers import (
    EVALUATE,
    TINY,
    TRAIN,
    Ran,
    assert_clean_success,
    assert_one_error_line,
    run_script,
    run_scripts,
    script_env,
    snapshot,
)


def json_summary(ran: Ran) -> dict:
    """The one JSON object an ``evaluate.py --json`` run printed."""
    assert_clean_success(ran)
    assert len(ran.stdout.strip().splitlines()) == 1, ran.stdout
    summary = json.loads(ran.stdout)
    assert isinstance(summary, dict)
    return summary


def evaluate_json(path, *args: str) -> dict:
    """Run evaluate.py --json and return its one JSON object."""
    return json_summary(run_script(EVALUATE, path, "--json", *args))


def evaluate_json_pair(first: tuple, second: tuple) -> tuple[dict, dict]:
    """Two independent evaluate.py --json processes, run side by side."""
    ran = run_scripts(
        {0: ((EVALUATE, *first, "--json"), {}), 1: ((EVALUATE, *second, "--json"), {})}
    )
    return json_summary(ran[0]), json_summary(ran[1])


@pytest.mark.parametrize("target", ["run dir", "checkpoint dir"])
def test_evaluate_human_readable(trained_run, target):
    path = trained_run if target == "run dir" else trained_run / "checkpoints" / "final"
    ran = run_script(EVALUATE, path, "--episodes", "3")
    assert_clean_success(ran)
    assert ran.stdout.startswith("CartPole-v1: ")
    assert str(trained_run / "checkpoints" / "final") in ran.stdout
    assert "norm batchnorm" in ran.stdout
    assert "over 3 episodes" in ran.stdout


def test_json_summary(trained_run):
    summary = evaluate_json(trained_run, "--episodes", "4", "--seed", "11")
    assert summary["env_id"] == "CartPole-v1"
    assert summary["episodes"] == 4
    assert summary["norm"] == "batchnorm"
    assert summary["step"] == 600
    returns = summary["returns"]
    assert len(returns) == 4
    assert all(isinstance(r, float) and r >= 1 for r in returns)
    assert summary["mean_return"] == pytest.approx(float(np.mean(returns)))
    assert summary["std_return"] == pytest.approx(float(np.std(returns)))
    assert summary["lengths"] == [int(r) for r in returns]  # CartPole pays 1 per step
    # one last observation (4 numbers) per episode that ended before CartPole's 500 steps
    failed = summary["terminal_observations"]
    assert len(failed) == sum(length < 500 for length in summary["lengths"])
    assert all(len(obs) == 4 for obs in failed)


def test_same_seed_same_returns_across_processes(trained_run):
    final = trained_run / "checkpoints" / "final"
    first, second = evaluate_json_pair(
        (trained_run, "--episodes", "5", "--seed", "123"),
        (final, "--episodes", "5", "--seed", "123"),
    )
    assert first["returns"] == second["returns"]
    assert first["lengths"] == second["lengths"]


def test_folding_does_not_change_returns(trained_run):
    final = trained_run / "checkpoints" / "final"
    folded, unfolded = evaluate_json_pair(
        (final, "--episodes", "5", "--seed", "7"),
        (final, "--episodes", "5", "--seed", "7", "--no-fold"),
    )
    assert folded["norm"] == unfolded["norm"] == "batchnorm"
    assert folded["returns"] == unfolded["returns"]


def test_video(trained_run, tmp_path):
    video_dir = tmp_path / "videos"
    ran = run_script(EVALUATE, trained_run, "--episodes", "2", "--video", video_dir)
    assert_clean_success(ran)
    videos = list(video_dir.glob("*.mp4"))
    assert videos, list(tmp_path.rglob("*"))
    assert all(v.stat().st_size > 0 for v in videos)
    assert f"videos: {video_dir}" in ran.stdout


def test_video_on_a_headless_machine_prints_no_stray_error(trained_run, tmp_path):
    env = script_env()
    for name in ("SDL_VIDEODRIVER", "SDL_AUDIODRIVER", "XDG_RUNTIME_DIR", "DISPLAY"):
        env.pop(name, None)
    ran = run_script(
        EVALUATE, trained_run, "--episodes", "1", "--video", tmp_path / "v", env=env
    )  # fmt: skip
    assert_clean_success(ran)
    assert ran.stderr == ""
    assert list((tmp_path / "v").glob("*.mp4"))


def test_wrong_env_for_checkpoint(trained_run):
    before = snapshot(trained_run)
    ran = run_script(EVALUATE, trained_run, "--env-id", "Acrobot-v1")
    line = assert_one_error_line(ran)
    assert "Acrobot-v1" in line
    assert "(6,)" in line and "(4,)" in line  # says what differs
    assert ran.stdout == ""
    assert snapshot(trained_run) == before


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory):
    """A tiny run with greedy evaluations, so it has a best and a final checkpoint."""
    run_dir = tmp_path_factory.mktemp("evaluated") / "run"
    flags = [*TINY, "--eval-freq", "200", "--eval-episodes", "2", "--run-dir", run_dir]
    assert_clean_success(run_script(TRAIN, *flags))
    return run_dir


def set_recorded_return(checkpoint, mean_return: float) -> None:
    path = checkpoint / "config.json"
    config = json.loads(path.read_text())
    config["evaluation"]["mean_return"] = mean_return
    path.write_text(json.dumps(config))


def test_checkpoints_record_the_greedy_evaluation_of_their_weights(evaluated_run):
    final = json.loads((evaluated_run / "checkpoints" / "final" / "config.json").read_text())
    assert final["evaluation"]["step"] == final["step"] == 600
    assert final["evaluation"]["episodes"] == 2
    best = json.loads((evaluated_run / "checkpoints" / "best" / "config.json").read_text())
    assert best["evaluation"]["step"] == best["step"] in (200, 400, 600)


def test_evaluate_says_when_the_run_has_a_better_checkpoint(evaluated_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(evaluated_run, run_dir)
    best, final = run_dir / "checkpoints" / "best", run_dir / "checkpoints" / "final"
    set_recorded_return(best, 321.0)
    set_recorded_return(final, 12.0)
    ran = run_script(EVALUATE, run_dir, "--episodes", "1")
    assert_clean_success(ran)
    last = ran.stdout.splitlines()[-1]
    assert last.startswith("this is the run's 'final' checkpoint; a better one exists: ")
    assert f"{best} (step " in last and "scored 321.00" in last and "this one 12.00" in last
    summary = evaluate_json(run_dir, "--episodes", "1")
    assert summary["checkpoint_name"] == "final"
    assert summary["better_in_run"]["checkpoint"] == str(best)
    assert summary["better_in_run"]["mean_return"] == 321.0
    on_best = run_script(EVALUATE, best, "--episodes", "1")
    assert "no other checkpoint of the run scored higher" in on_best.stdout


def test_a_run_without_evaluations_claims_nothing_about_better_checkpoints(trained_run):
    summary = evaluate_json(trained_run, "--episodes", "1")
    assert summary["better_in_run"] is None and summary["training_evaluation"] is None
    ran = run_script(EVALUATE, trained_run, "--episodes", "1")
    assert "better" not in ran.stdout and "scored higher" not in ran.stdout


def test_recalibration_recomputes_statistics_from_the_policys_own_states(trained_run):
    before = snapshot(trained_run)
    plain = evaluate_json(trained_run, "--episodes", "3")
    summary = evaluate_json(trained_run, "--episodes", "3", "--recalibrate", "300")
    assert plain["recalibrated"] is None
    assert summary["recalibrated"] == {
        "source": "policy",
        "states": 300,
        "modules": 2,
        "seed": 10_007,
    }
    assert snapshot(trained_run) == before  # the checkpoint on disk is never rewritten
    text = run_script(EVALUATE, trained_run, "--episodes", "2", "--recalibrate", "50")
    assert_clean_success(text)
    assert "running statistics of 2 layer(s) recomputed first from 50 states" in text.stdout
    assert "of the policy's own episodes (seed 10007)" in text.stdout
    flags = ("--episodes", "2", "--recalibrate", "50", "--recalibrate-from", "replay")
    text = run_script(EVALUATE, trained_run, *flags)
    assert_clean_success(text)
    assert "from 50 states of the run's replay memory (snapshot at step" in text.stdout
    assert snapshot(trained_run) == before


def test_recalibration_needs_two_states(trained_run):
    line = assert_one_error_line(run_script(EVALUATE, trained_run, "--recalibrate", "1"))
    assert "at least 2 states" in line
