"""Users' own envs by gymnasium's ``module:Name-v0`` id: trained, evaluated, studied.

The module is imported because the user named it; a checkpoint that names one never gets it
imported by evaluate.py unasked (the module below leaves a marker file each time it is).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from script_helpers import (
    EVALUATE,
    TINY,
    TRAIN,
    assert_clean_success,
    assert_one_error_line,
    run_script,
    script_env,
    snapshot,
)

from agents.study.grid import reward_threshold

MODULE = "qnorm_user_envs"
ENV_ID = f"{MODULE}:QnormUserCartPole-v0"
SOURCE = """\
import os
from pathlib import Path

import gymnasium as gym

with open(Path(__file__).with_name("imported.log"), "a") as log:
    log.write(f"{os.getpid()}\\n")
gym.register(
    id="QnormUserCartPole-v0",
    entry_point="gymnasium.envs.classic_control:CartPoleEnv",
    max_episode_steps=100,
    reward_threshold=90.0,
)
"""


@pytest.fixture(scope="module")
def user_module(tmp_path_factory) -> Path:
    """A folder holding the user's env module, to put on PYTHONPATH."""
    folder = tmp_path_factory.mktemp("user_module")
    (folder / f"{MODULE}.py").write_text(SOURCE)
    return folder


@pytest.fixture(scope="module")
def user_run(user_module, tmp_path_factory):
    """A tiny run on the user's env, and what train.py printed."""
    run_dir = tmp_path_factory.mktemp("user_run") / "run"
    env = script_env(PYTHONPATH=str(user_module))
    ran = run_script(TRAIN, *TINY, "--env-id", ENV_ID, "--run-dir", run_dir, env=env)
    return run_dir, ran


def imports_logged(user_module: Path) -> int:
    log = user_module / "imported.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_train_imports_the_named_module_and_records_the_id(user_module, user_run):
    run_dir, ran = user_run
    assert_clean_success(ran)
    assert imports_logged(user_module) >= 1
    config = json.loads((run_dir / "checkpoints" / "final" / "config.json").read_text())
    assert config["env_id"] == ENV_ID
    # The printed evaluate command names the env, so it runs as printed.
    evaluate = next(line for line in ran.stdout.splitlines() if line.startswith("evaluate:"))
    assert shlex.split(evaluate)[-2:] == ["--env-id", ENV_ID]


def test_evaluate_never_imports_a_module_a_checkpoint_names(user_module, user_run):
    run_dir, _ = user_run
    before, imports = snapshot(run_dir), imports_logged(user_module)
    env = script_env(PYTHONPATH=str(user_module))
    line = assert_one_error_line(run_script(EVALUATE, run_dir, env=env))
    assert f"would import module {MODULE!r}" in line and f"--env-id {ENV_ID}" in line
    assert imports_logged(user_module) == imports  # its code did not run
    assert snapshot(run_dir) == before


def test_evaluate_imports_the_module_the_user_names(user_module, user_run):
    run_dir, _ = user_run
    env = script_env(PYTHONPATH=str(user_module))
    ran = run_script(EVALUATE, run_dir, "--env-id", ENV_ID, "--episodes", "2", env=env)
    assert_clean_success(ran)
    assert ran.stdout.startswith(f"{ENV_ID}: ")


def test_an_unimportable_module_is_one_error_line(tmp_path):
    ran = run_script(TRAIN, *TINY, "--env-id", "no_such_module_here:Foo-v0", cwd=tmp_path)
    line = assert_one_error_line(ran)
    assert "'no_such_module_here'" in line and "cannot be imported" in line
    assert list(tmp_path.iterdir()) == []


def test_the_study_reads_a_user_envs_threshold(user_module, monkeypatch):
    monkeypatch.syspath_prepend(str(user_module))
    assert reward_threshold(ENV_ID) == 90.0
