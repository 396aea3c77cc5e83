"""scripts/study.py: the grid and overrides it hands to the study, --quick included."""

import importlib.util
from pathlib import Path

import pytest

from agents.study.grid import ENVS, VARIANTS
from agents.study.study import QUICK

STUDY_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "study.py"


@pytest.fixture
def study_script(monkeypatch):
    """The script as a module, with run_study replaced by a recorder of its arguments."""
    spec = importlib.util.spec_from_file_location("study_script", STUDY_SCRIPT)
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
    assert (spec.envs, spec.variants, spec.seeds) == (list(ENVS), list(VARIANTS), 5)
