"""Misbehaving user envs, injected by gymnasium's ``module:Name-v0`` ids: the NaN guard and
an env that raises stop the run with one ``error:`` line, and what was saved before stays good.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from script_helpers import (
    TRAIN,
    assert_clean_success,
    assert_one_error_line,
    run_scripts,
    script_env,
)

from agents.checkpoint import load_policy

MODULE = "qnorm_faulty_envs"
SOURCE = """\
import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control import CartPoleEnv


class FaultyCartPole(CartPoleEnv):
    # CartPole whose every step after the first AFTER goes wrong in the way FAULT names.

    def __init__(self, fault, after=300, render_mode=None):
        super().__init__(render_mode=render_mode)
        self.fault, self.after, self.steps = fault, after, 0

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        self.steps += 1
        if self.steps > self.after:
            if self.fault == "nan_obs":
                obs = obs.copy()
                obs[2] = np.nan
            elif self.fault == "inf_reward":
                reward = float("inf")
            elif self.fault == "huge_reward":  # finite, but the Q-values overflow
                reward = 3e38
            elif self.fault == "raise":
                raise RuntimeError("the simulator lost its state")
            elif self.fault == "float64_obs":  # gymnasium casts it to the declared float32
                obs = obs.astype(np.float64)
        return obs, reward, terminated, truncated, info


for fault in ("nan_obs", "inf_reward", "huge_reward", "raise", "float64_obs"):
    gym.register(
        id=f"Faulty-{fault}-v0",
        entry_point=FaultyCartPole,
        kwargs={"fault": fault},
        max_episode_steps=500,
    )
"""
FLAGS = [
    *("--total-timesteps", "1500", "--learning-starts", "100", "--hidden-sizes", "32", "32"),
    *("--eval-freq", "0", "--checkpoint-freq", "200", "--train-freq", "4"),
    *("--batch-size", "16", "--buffer-size", "2000", "--state-freq", "200"),
]
# fault: what the one error line says (None: the run succeeds)
FAULTS = {
    "nan_obs": "returned a non-finite observation at step",
    "inf_reward": "returned a non-finite reward at step",
    "huge_reward": "training diverged at step",
    "raise": "raised RuntimeError in step() at step",
    "float64_obs": None,
}


@pytest.fixture(scope="module")
def faulty_runs(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("faulty_module")
    (folder / f"{MODULE}.py").write_text(SOURCE)
    env = script_env(PYTHONPATH=str(folder))
    runs, jobs = {}, {}
    for fault in FAULTS:
        runs[fault] = tmp_path_factory.mktemp(fault) / "run"
        env_id = f"{MODULE}:Faulty-{fault}-v0"
        jobs[fault] = ((TRAIN, *FLAGS, "--env-id", env_id, "--run-dir", runs[fault]), {"env": env})
    ran = run_scripts(jobs)
    return {fault: (runs[fault], ran[fault]) for fault in FAULTS}


def finite_weights(checkpoint: Path) -> bool:
    net = load_policy(checkpoint).network
    return all(torch.isfinite(t).all() for t in (*net.parameters(), *net.buffers()))


@pytest.mark.parametrize("fault", [f for f, says in FAULTS.items() if says])
def test_a_fault_stops_the_run_with_one_line_and_keeps_the_good_checkpoints(faulty_runs, fault):
    run_dir, ran = faulty_runs[fault]
    line = assert_one_error_line(ran)
    assert FAULTS[fault] in line
    step = int(line.split(" at step ")[1].split()[0].rstrip(":"))
    assert 300 < step < 1500  # the first step that went wrong, not the end of the run
    saved = sorted((run_dir / "checkpoints").iterdir())
    assert f"the last good checkpoint is {saved[-1]}" in line
    assert "final" not in [p.name for p in saved]  # nothing saved from the broken state
    assert all(finite_weights(p) for p in saved)
    assert all(int(p.name) <= step for p in saved)
    # The snapshot for --resume is the last good one too, named in the line.
    state = json.loads((run_dir / "state" / "state.json").read_text())
    assert state["global_step"] <= step
    assert f"the last good snapshot {run_dir / 'state'} (step {state['global_step']:,})" in line
    tensors = load_file(run_dir / "state" / "tensors.safetensors")
    assert all(torch.isfinite(t).all() for k, t in tensors.items() if k.startswith("online."))


def test_an_env_with_float64_observations_trains(faulty_runs):
    run_dir, ran = faulty_runs["float64_obs"]
    assert_clean_success(ran)
    assert finite_weights(run_dir / "checkpoints" / "final")
