"""scripts/study.py: the grid and overrides it hands to the study, and a tiny study end to end."""

import csv
import importlib.util
from pathlib import Path

import pytest
from script_helpers import STUDY, assert_clean_success, run_script

from agents.study.grid import DEFAULT_VARIANTS, ENVS
from agents.study.study import QUICK


@pytest.fixture
def study_script(monkeypatch):
    """The script as a module, with run_study replaced by a recorder of its arguments."""
    spec = importlib.util.spec_from_file_location("study_script", STUDY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    calls = []
    monkeypatch.setattr(module, "run_study", lambda s, train: calls.append((s, train)))
    module.calls = calls
    return module


def test_quick_runs_the_quick_grid_under_its_own_name(study_script):
    assert study_script.main(["--quick"]) == 0
    ((spec, train),) = study_script.calls
    assert train and spec.name == "quick"
    assert (spec.envs, spec.variants, spec.seeds) == (
        QUICK["envs"],
        QUICK["variants"],
        QUICK["seeds"],
    )
    assert spec.overrides == QUICK["overrides"]
    assert spec.results_root == Path("results") / "quick"


def test_set_overrides_win_over_quick_and_are_parsed_as_literals(study_script):
    study_script.main(["--quick", "--set", "run.total_timesteps=400", "run.env_id=CartPole-v1"])
    ((spec, _),) = study_script.calls
    assert spec.overrides["run.total_timesteps"] == 400
    assert spec.overrides["run.eval_freq"] == QUICK["overrides"]["run.eval_freq"]
    assert spec.overrides["run.env_id"] == "CartPole-v1"  # not a literal: kept as text


def test_default_is_the_full_grid_and_aggregate_only_trains_nothing(study_script):
    study_script.main(["--aggregate-only", "--workers", "3"])
    ((spec, train),) = study_script.calls
    assert not train and spec.name == "main" and spec.workers == 3
    assert (spec.envs, spec.variants, spec.seeds) == (list(ENVS), list(DEFAULT_VARIANTS), 5)


# A study cell that trains for about a second and evaluates twice.
TINY_STUDY = [
    "run.total_timesteps=600",
    "run.eval_freq=300",
    "run.eval_episodes=2",
    "network.hidden_sizes=[16,16]",
    "dqn.learning_starts=100",
    "dqn.train_freq=4",
    "dqn.gradient_steps=1",
    "dqn.batch_size=16",
]


def run_tiny_study(tmp_path, *extra):
    return run_script(
        STUDY,
        *("--name", "tiny", "--envs", "CartPole-v1", "--variants", "none", "batchnorm"),
        *("--seeds", "1", "--workers", "2", "--set", *TINY_STUDY),
        *("--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results")),
        *extra,
    )


def test_tiny_study_end_to_end_then_resume_skips_everything(tmp_path):
    first = run_tiny_study(tmp_path)
    assert_clean_success(first)
    assert "2 to run" in first.stdout
    results = tmp_path / "results" / "tiny"
    rows = list(csv.DictReader((results / "runs.csv").read_text().splitlines()))
    assert len(rows) == 4  # 2 runs x 2 evaluations
    assert "| batchnorm | 1 |" in (results / "tables.md").read_text()
    assert (results / "CartPole-v1.png").is_file() and (results / "study.json").is_file()

    again = run_tiny_study(tmp_path)
    assert_clean_success(again)
    assert "2 already finished, 0 to run" in again.stdout


def test_study_on_a_local_ray_instance(tmp_path):
    pytest.importorskip("ray")
    assert_clean_success(run_tiny_study(tmp_path, "--ray-address", "local"))
    assert (tmp_path / "results" / "tiny" / "runs.csv").is_file()
