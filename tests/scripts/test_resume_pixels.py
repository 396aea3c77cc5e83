"""--resume of a MinAtar run: its frame replay is in the snapshot (chunk files beside it), and a
run killed with SIGKILL resumes bit for bit, the game's own generator and sticky action included.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from safetensors.torch import load_file
from script_helpers import TRAIN, assert_clean_success, run_script, script_env

from agents.frame_store import frames_dir
from agents.plotting import read_scalars
from agents.snapshot import snapshot_dir

pytest.importorskip("minatar", reason="needs the minatar extra: pip install -e '.[minatar]'")

MODULE = "qnorm_killer_minatar"
ENV_ID = f"{MODULE}:MinAtar/KillerBreakout-v0"  # in MinAtar's namespace: the MinAtar family
# MinAtar Breakout; the first env made in the process SIGKILLs it at the step QNORM_KILL_AT names.
SOURCE = """\
import os
import signal

import gymnasium as gym
from minatar.gym import BaseEnv

MADE = []


class KillerBreakout(BaseEnv):
    def __init__(self, render_mode=None):
        super().__init__("breakout", render_mode=render_mode)
        self.kill_at = int(os.environ.get("QNORM_KILL_AT", "0")) if not MADE else 0
        self.steps = 0
        MADE.append(self)

    def step(self, action):
        self.steps += 1
        if self.steps == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().step(action)


gym.register(id="MinAtar/KillerBreakout-v0", entry_point=KillerBreakout)
"""
# A buffer smaller than the run, so the frame rings wrap between snapshots.
FLAGS = [
    *("--env-id", ENV_ID, "--total-timesteps", "3000", "--learning-starts", "500"),
    *("--buffer-size", "1500", "--train-freq", "4", "--batch-size", "32"),
    *("--conv-channels", "8", "--hidden-sizes", "32", "--eval-freq", "1500"),
    *("--eval-episodes", "2", "--state-freq", "800"),
]


@pytest.fixture(scope="module")
def killer_env(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("killer_minatar_module")
    (folder / f"{MODULE}.py").write_text(SOURCE)
    return script_env(PYTHONPATH=str(folder))


@pytest.fixture(scope="module")
def uninterrupted(killer_env, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("alone") / "run"
    assert_clean_success(run_script(TRAIN, *FLAGS, "--run-dir", run_dir, env=killer_env))
    return run_dir


def weights(run_dir: Path) -> dict:
    return load_file(run_dir / "checkpoints" / "final" / "model.safetensors")


def test_a_minatar_run_keeps_its_frames_beside_the_snapshot(uninterrupted):
    chunks = list(frames_dir(uninterrupted).iterdir())
    assert chunks and all(p.suffix == ".npy" for p in chunks)


def test_a_minatar_run_killed_at_a_random_step_resumes_bit_for_bit(
    killer_env, uninterrupted, tmp_path
):
    # Past the first snapshot (800 steps and the episode then running) and before the end.
    kill_at = random.Random().randint(1200, 2500)
    run_dir = tmp_path / "run"
    killed = run_script(
        TRAIN, *FLAGS, "--run-dir", run_dir, env={**killer_env, "QNORM_KILL_AT": str(kill_at)}
    )
    assert killed.returncode == -9, f"kill at {kill_at}: {killed.stderr}"
    assert_clean_success(run_script(TRAIN, "--resume", run_dir, env=killer_env))
    expected, got = weights(uninterrupted), weights(run_dir)
    assert expected.keys() == got.keys()
    assert all((expected[k] == got[k]).all() for k in expected), f"killed at {kill_at}"
    for tag in ("charts/episodic_return", "losses/td_loss", "eval/mean_return"):
        assert read_scalars(run_dir, tag) == read_scalars(uninterrupted, tag), (tag, kill_at)


def test_a_finished_minatar_run_extends_from_its_mid_episode_snapshot(killer_env, tmp_path):
    # The final snapshot is taken where the run stopped, here inside an episode: the resumed
    # run starts fresh episodes, and the frame replay must take their first observations.
    run_dir = tmp_path / "run"
    short = [*FLAGS, "--total-timesteps", "1337", "--eval-freq", "0", "--run-dir", run_dir]
    assert_clean_success(run_script(TRAIN, *short, env=killer_env))
    env_state = json.loads((snapshot_dir(run_dir) / "state.json").read_text())["env"]
    assert not env_state["at_boundary"]  # seeded: this run's step 1337 is inside an episode
    before = read_scalars(run_dir, "charts/episodic_return")
    extended = run_script(TRAIN, "--resume", run_dir, "--total-timesteps", "1700", env=killer_env)
    assert_clean_success(extended)
    assert max(step for step, _ in read_scalars(run_dir, "losses/td_loss")) > 1337
    after = read_scalars(run_dir, "charts/episodic_return")
    assert after[: len(before)] == before and after[-1][0] > 1337
