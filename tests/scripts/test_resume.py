"""--resume: a run killed with SIGKILL at a random step and resumed ends bit for bit where the
same run left alone ends; what resume refuses, and what it leaves untouched when it does.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from safetensors.torch import load_file
from script_helpers import (
    TRAIN,
    assert_clean_success,
    assert_one_error_line,
    run_script,
    script_env,
    snapshot,
)

from agents.plotting import read_scalars

MODULE = "qnorm_killer_env"
ENV_ID = f"{MODULE}:KillerCartPole-v0"
# CartPole; the first env made in the process sends itself QNORM_SIGNAL (SIGKILL unless
# named) at the step QNORM_KILL_AT names.
SOURCE = """\
import os
import signal

import gymnasium as gym
from gymnasium.envs.classic_control import CartPoleEnv

MADE = []


class KillerCartPole(CartPoleEnv):
    def __init__(self, render_mode=None):
        super().__init__(render_mode=render_mode)
        self.kill_at = int(os.environ.get("QNORM_KILL_AT", "0")) if not MADE else 0
        self.signal = getattr(signal, os.environ.get("QNORM_SIGNAL", "SIGKILL"))
        self.steps = 0
        MADE.append(self)

    def step(self, action):
        self.steps += 1
        if self.steps == self.kill_at:
            os.kill(os.getpid(), self.signal)
        return super().step(action)


gym.register(id="KillerCartPole-v0", entry_point=KillerCartPole, max_episode_steps=500)
"""
FLAGS = [
    *("--env-id", ENV_ID, "--total-timesteps", "6000", "--learning-starts", "300"),
    *("--hidden-sizes", "32", "32", "--batch-size", "32", "--buffer-size", "5000"),
    *("--train-freq", "4", "--target-update-interval", "200", "--eval-freq", "1500"),
    *("--eval-episodes", "2", "--state-freq", "1000"),
]


@pytest.fixture(scope="module")
def killer_env(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("killer_module")
    (folder / f"{MODULE}.py").write_text(SOURCE)
    return script_env(PYTHONPATH=str(folder))


@pytest.fixture(scope="module")
def uninterrupted(killer_env, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("alone") / "run"
    assert_clean_success(run_script(TRAIN, *FLAGS, "--run-dir", run_dir, env=killer_env))
    return run_dir


def weights(run_dir: Path) -> dict:
    return load_file(run_dir / "checkpoints" / "final" / "model.safetensors")


def kill_and_resume(flags: list[str], killer_env: dict, run_dir: Path) -> int:
    """Train with ``flags``, SIGKILLed at a random step, then resume; the step it died at."""
    # Past the first snapshot and before the end: the env counts its own step() calls, which
    # are fewer than the run's 6,000 steps (a vector env's autoreset steps call reset()).
    kill_at = random.Random().randint(1200, 4500)
    killed = run_script(
        TRAIN, *flags, "--run-dir", run_dir, env={**killer_env, "QNORM_KILL_AT": str(kill_at)}
    )
    assert killed.returncode == -9, f"kill at {kill_at}: {killed.stderr}"
    assert_clean_success(run_script(TRAIN, "--resume", run_dir, env=killer_env))
    return kill_at


def assert_same_run(run_dir: Path, uninterrupted: Path, kill_at: int) -> None:
    expected, got = weights(uninterrupted), weights(run_dir)
    assert expected.keys() == got.keys()
    assert all((expected[k] == got[k]).all() for k in expected), f"killed at {kill_at}"
    # The curves continue: no point lost or logged twice around the kill.
    for tag in ("charts/episodic_return", "losses/td_loss", "eval/mean_return"):
        assert read_scalars(run_dir, tag) == read_scalars(uninterrupted, tag), (tag, kill_at)


@pytest.mark.parametrize("draw", range(2))
def test_a_run_killed_at_a_random_step_resumes_bit_for_bit(
    killer_env, uninterrupted, tmp_path, draw
):
    kill_at = kill_and_resume(FLAGS, killer_env, tmp_path / "run")
    assert_same_run(tmp_path / "run", uninterrupted, kill_at)


@pytest.mark.parametrize("draw", range(2))
def test_a_run_stopped_by_ctrl_c_ends_its_episode_and_resumes_bit_for_bit(
    killer_env, uninterrupted, tmp_path, draw
):
    run_dir = tmp_path / "run"
    stop_at = random.Random().randint(1200, 4500)
    ctrl_c = {**killer_env, "QNORM_KILL_AT": str(stop_at), "QNORM_SIGNAL": "SIGINT"}
    stopped = run_script(TRAIN, *FLAGS, "--run-dir", run_dir, env=ctrl_c)
    assert stopped.returncode == 130, f"Ctrl-C at {stop_at}: {stopped.stderr}"
    # The run went on to the end of its episode, so its snapshot is at a boundary.
    state = json.loads((run_dir / "state" / "state.json").read_text())
    assert state["env"]["at_boundary"], stop_at
    assert "inside an episode" not in stopped.stderr
    assert_clean_success(run_script(TRAIN, "--resume", run_dir, env=killer_env))
    assert_same_run(run_dir, uninterrupted, stop_at)


def test_an_n_step_run_resumes_bit_for_bit(killer_env, tmp_path):
    """The replay's links between consecutive transitions travel with the snapshot."""
    flags = [*FLAGS, "--n-step", "3"]
    alone = tmp_path / "alone"
    assert_clean_success(run_script(TRAIN, *flags, "--run-dir", alone, env=killer_env))
    kill_at = kill_and_resume(flags, killer_env, tmp_path / "run")
    assert_same_run(tmp_path / "run", alone, kill_at)
    config = json.loads((alone / "config.json").read_text())
    assert config["dqn"]["n_step"] == 3


def test_a_joint_run_bootstrapped_by_a_lagged_copy_resumes_bit_for_bit(killer_env, tmp_path):
    """The lagged copy of a joint update (its weights and statistics) travels too."""
    joint = ("--norm", "batchrenorm", "--bn-mode", "joint", "--joint-target", "--tau", "0.5")
    flags = [*FLAGS, *joint, "--renorm-warmup", "200"]
    alone = tmp_path / "alone"
    assert_clean_success(run_script(TRAIN, *flags, "--run-dir", alone, env=killer_env))
    kill_at = kill_and_resume(flags, killer_env, tmp_path / "run")
    assert_same_run(tmp_path / "run", alone, kill_at)
    config = json.loads((alone / "checkpoints" / "final" / "config.json").read_text())
    assert config["target_scheme"] == "joint_batch_lagged"


def test_resume_extends_a_finished_run(killer_env, uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(uninterrupted, run_dir)
    ran = run_script(TRAIN, "--resume", run_dir, "--total-timesteps", "7000", env=killer_env)
    assert_clean_success(ran)
    final = json.loads((run_dir / "checkpoints" / "final" / "config.json").read_text())
    assert final["step"] == 7000
    assert json.loads((run_dir / "state" / "state.json").read_text())["global_step"] == 7000


def corrupt_snapshot(run_dir: Path) -> None:
    tensors = run_dir / "state" / "tensors.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:100])


def future_snapshot(run_dir: Path) -> None:
    path = run_dir / "state" / "state.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "format_version": 99}))


def other_network(run_dir: Path) -> None:
    path = run_dir / "config.json"
    config = json.loads(path.read_text())
    config["network"]["hidden_sizes"] = [64, 64]
    path.write_text(json.dumps(config))


def edited_config(run_dir: Path, section: str, **fields) -> None:
    path = run_dir / "config.json"
    config = json.loads(path.read_text())
    config[section].update(fields)
    path.write_text(json.dumps(config))


def frames_of_another_buffer(run_dir: Path) -> None:
    path = run_dir / "state" / "state.json"
    state = json.loads(path.read_text())
    state["replay"]["size"] = 10**9
    path.write_text(json.dumps(state))


def incomplete_snapshot(run_dir: Path) -> None:
    path = run_dir / "state" / "state.json"
    state = json.loads(path.read_text())
    del state["replay"]
    path.write_text(json.dumps(state))


def no_snapshot(run_dir: Path) -> None:
    shutil.rmtree(run_dir / "state")


# case: (what to do to a copy of a finished run, extra flags, what the one error line says)
REFUSALS = {
    "changes-the-experiment": (None, ["--learning-rate", "0.1"], "--learning-rate would change"),
    "corrupt-snapshot": (corrupt_snapshot, [], "missing, truncated or corrupt"),
    "future-snapshot": (future_snapshot, [], "snapshot format version 99"),
    "no-snapshot": (no_snapshot, [], "holds no training-state snapshot"),
    "snapshot-of-another-network": (other_network, [], "does not fit this run's network"),
    "total-below-the-snapshot": (None, ["--total-timesteps", "100"], "past --total-timesteps"),
    "config-unknown-key": (
        lambda d: edited_config(d, "dqn", bogus=1),
        [],
        "config.json is not a valid training config: DQNConfig has no field(s) bogus",
    ),
    "config-wrong-type": (
        lambda d: edited_config(d, "dqn", batch_size="large"),
        [],
        "batch_size",
    ),
    "replay-of-another-size": (frames_of_another_buffer, [], "does not fit a capacity"),
    "incomplete-snapshot": (incomplete_snapshot, [], "is incomplete or damaged"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_resume_refuses_and_changes_nothing(killer_env, uninterrupted, tmp_path, case):
    damage, flags, says = REFUSALS[case]
    run_dir = tmp_path / "run"
    shutil.copytree(uninterrupted, run_dir)
    if damage is not None:
        damage(run_dir)
    before = snapshot(run_dir)
    line = assert_one_error_line(run_script(TRAIN, "--resume", run_dir, *flags, env=killer_env))
    assert says in line
    assert snapshot(run_dir) == before


def test_resume_of_a_folder_that_is_not_a_run(tmp_path):
    line = assert_one_error_line(run_script(TRAIN, "--resume", tmp_path))
    assert "is not a qnorm run directory" in line
    assert list(tmp_path.iterdir()) == []


def steps_of(run_dir: Path, tag: str) -> list[int]:
    return [step for step, _ in read_scalars(run_dir, tag)]


def test_with_several_envs_a_killed_run_resumes_with_fresh_episodes_and_no_gaps(
    killer_env, tmp_path
):
    # Several envs are never all at an episode boundary, so a snapshot cannot hold them: the
    # resumed run starts fresh episodes there. What holds: the networks, optimizer, replay and
    # counters continue, and every curve has each step once, the periodic ones at the steps
    # an uninterrupted run logs them.
    flags = [*FLAGS, "--num-envs", "2"]
    alone, killed_dir = tmp_path / "alone", tmp_path / "killed"
    assert_clean_success(run_script(TRAIN, *flags, "--run-dir", alone, env=killer_env))
    kill_at = random.Random().randint(1500, 2500)  # the first env's steps: half the run's
    env = {**killer_env, "QNORM_KILL_AT": str(kill_at)}
    assert run_script(TRAIN, *flags, "--run-dir", killed_dir, env=env).returncode == -9
    snapshot_step = json.loads((killed_dir / "state" / "state.json").read_text())["global_step"]
    assert_clean_success(run_script(TRAIN, "--resume", killed_dir, env=killer_env))
    final = json.loads((killed_dir / "checkpoints" / "final" / "config.json").read_text())
    assert final["step"] == 6000
    for tag in ("losses/td_loss", "eval/mean_return", "charts/SPS"):
        assert steps_of(killed_dir, tag) == steps_of(alone, tag), (tag, kill_at)
    # Episodes (two may end at one step): up to the snapshot the same run's, then fresh ones.
    episodes, expected = (steps_of(d, "charts/episodic_return") for d in (killed_dir, alone))
    assert episodes == sorted(episodes) and episodes[-1] > snapshot_step
    before = [s for s in episodes if s <= snapshot_step]
    assert before and before == [s for s in expected if s <= snapshot_step]


@contextlib.contextmanager
def read_only(folder: Path):
    """``folder`` unwritable for this user: chmod for a user, the immutable flag for root."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", folder]).returncode:
        pytest.skip("root ignores file modes, and chattr +i is not available here")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", folder], check=True)


@pytest.mark.parametrize("where", [".", "checkpoints", "state.frames"])
def test_resume_of_a_read_only_run_dir_is_refused_and_changes_nothing(
    killer_env, uninterrupted, tmp_path, where
):
    run_dir = tmp_path / "run"
    shutil.copytree(uninterrupted, run_dir)
    (run_dir / "state.frames").mkdir()  # as an image run has it
    before = snapshot(run_dir)
    with read_only(run_dir / where):
        ran = run_script(TRAIN, "--resume", run_dir, "--total-timesteps", "7000", env=killer_env)
    assert f"cannot write in {run_dir / where} " in assert_one_error_line(ran)
    assert snapshot(run_dir) == before


# Loaded at start-up by each Python started with its folder on PYTHONPATH: the snapshot
# write number QNORM_FULL_AT meets a full disk (the others write normally).
FULL_DISK = """\
import errno
import os

import safetensors.torch

_save_file = safetensors.torch.save_file
_writes = []


def save_file(tensors, filename, metadata=None):
    if (metadata or {}).get("format") == "qnorm-state":
        _writes.append(filename)
        if len(_writes) == int(os.environ.get("QNORM_FULL_AT", "0")):
            with open(filename, "wb") as handle:
                handle.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
    return _save_file(tensors, filename, metadata=metadata)


safetensors.torch.save_file = save_file
"""


def test_a_disk_full_during_a_snapshot_stops_the_run_and_keeps_the_previous_one(
    killer_env, uninterrupted, tmp_path
):
    folder = tmp_path / "full_disk"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(FULL_DISK)
    env = {**killer_env, "PYTHONPATH": f"{folder}{os.pathsep}{killer_env['PYTHONPATH']}"}
    run_dir = tmp_path / "run"
    ran = run_script(TRAIN, *FLAGS, "--run-dir", run_dir, env={**env, "QNORM_FULL_AT": "3"})
    line = assert_one_error_line(ran)
    assert "No space left on device; the previous snapshot is intact" in line
    state = json.loads((run_dir / "state" / "state.json").read_text())
    assert 2000 <= state["global_step"] < 3000  # the second snapshot, every 1,000 steps
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".")) == []
    # Once there is room again, the run resumes from it and ends where the run left alone does.
    assert_clean_success(run_script(TRAIN, "--resume", run_dir, env=killer_env))
    expected, got = weights(uninterrupted), weights(run_dir)
    assert all((expected[k] == got[k]).all() for k in expected)
