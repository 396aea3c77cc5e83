"""scripts/study.py: the grid and overrides it hands to the study, and a tiny study end to end."""

import csv
import importlib.util
import json
from pathlib import Path

import pytest
from script_helpers import REPO, STUDY, assert_clean_success, assert_one_error_line, run_script

from agents.study.aggregate import write_runs_csv
from agents.study.grid import DEFAULT_VARIANTS, ENVS, Cell
from agents.study.study import DIAGNOSIS, HOLDING, MINATAR, QUICK


@pytest.fixture
def study_script(monkeypatch):
    """The script as a module, with run_study replaced by a recorder of its arguments."""
    spec = importlib.util.spec_from_file_location("study_script", STUDY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    calls = []
    reruns = []

    def record(spec, train, rerun=False):
        calls.append((spec, train))
        reruns.append(rerun)

    monkeypatch.setattr(module, "run_study", record)
    module.reruns = reruns
    module.calls = calls
    return module


@pytest.mark.parametrize(
    ("flags", "name", "grid"),
    [
        (["--quick"], "quick", QUICK),
        (["--protocol", "quick"], "quick", QUICK),
        (["--protocol", "minatar"], "minatar", MINATAR),
        (["--protocol", "diagnosis", "--envs", "CartPole-v1"], "diagnosis", DIAGNOSIS),
        (["--protocol", "holding"], "holding", HOLDING),
    ],
)
def test_a_protocol_runs_its_grid_under_its_own_name(study_script, flags, name, grid):
    assert study_script.main(flags) == 0
    ((spec, train),) = study_script.calls
    assert train and spec.name == name
    envs = ["CartPole-v1"] if "--envs" in flags else grid["envs"]
    assert (spec.envs, spec.variants, spec.seeds) == (envs, grid["variants"], grid["seeds"])
    assert spec.first_seed == grid.get("first_seed", 0)
    assert spec.overrides == grid["overrides"]
    assert spec.results_root == Path("results") / name
    assert spec.diagnosis == grid.get("diagnosis", False)


def test_explicit_grid_flags_win_over_the_protocol(study_script):
    study_script.main(["--protocol", "minatar", "--seeds", "1", "--variants", "none"])
    ((spec, _),) = study_script.calls
    assert (spec.envs, spec.variants, spec.seeds) == (MINATAR["envs"], ["none"], 1)
    assert spec.name == "minatar" and spec.overrides == MINATAR["overrides"]


def test_the_minatar_protocol_keeps_the_papers_exploration_at_500k_frames():
    overrides = MINATAR["overrides"]
    decay_frames = overrides["dqn.exploration_fraction"] * overrides["run.total_timesteps"]
    assert decay_frames == 100_000  # the MinAtar reference anneals epsilon over 100k frames


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


def test_the_default_grid_is_the_committed_main_studys():
    """A variant added for another protocol must not join the default grid, where
    ``python scripts/study.py`` would train it on every env (and rewrite results/main)."""
    committed = json.loads((REPO / "results" / "main" / "study.json").read_text())
    assert list(DEFAULT_VARIANTS) == committed["variants"]
    assert list(ENVS) == committed["envs"]


def test_bootstrap_resamples_reach_the_study_and_must_be_positive(study_script, capsys):
    study_script.main(["--aggregate-only", "--bootstrap-reps", "500"])
    ((spec, _),) = study_script.calls
    assert spec.bootstrap_reps == 500
    with pytest.raises(SystemExit) as stop:
        study_script.main(["--aggregate-only", "--bootstrap-reps", "0"])
    assert stop.value.code == 2
    assert "error: --bootstrap-reps must be at least 1" in capsys.readouterr().err


def test_rerun_reaches_the_study_and_refuses_aggregate_only(study_script, capsys):
    study_script.main(["--protocol", "fair", "--variants", "rmsnorm", "--rerun"])
    assert study_script.reruns == [True]
    with pytest.raises(SystemExit) as stop:
        study_script.main(["--aggregate-only", "--rerun"])
    assert stop.value.code == 2
    assert "error: --rerun trains: it cannot go with --aggregate-only" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        study_script.main(["--per-run", "--rerun"])
    assert stop.value.code == 2
    assert "cannot go with --aggregate-only or --per-run" in capsys.readouterr().err


def test_per_run_prints_the_recorded_runs_and_trains_nothing(study_script, tmp_path, capsys):
    write_runs_csv(
        tmp_path / "tiny" / "runs.csv",
        {Cell("CartPole-v1", "none", 0): [(100, 9.0), (200, 12.5)]},
    )
    flags = ["--name", "tiny", "--envs", "CartPole-v1", "--variants", "none", "batchnorm"]
    assert study_script.main([*flags, "--results-dir", str(tmp_path), "--per-run"]) == 0
    assert study_script.calls == []
    rows = capsys.readouterr().out.splitlines()
    assert rows[2:] == ["| CartPole-v1 | none | 0 | 12.5 | 12.5 (200) | 10.8 | 10.8 | 2 |"]


def test_per_run_without_results_is_one_error_line(tmp_path):
    ran = run_script(STUDY, "--name", "tiny", "--results-dir", str(tmp_path), "--per-run")
    assert "no runs recorded in" in assert_one_error_line(ran)


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
        *("--bootstrap-reps", "200"),
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

    # A run of part of the grid keeps the rest in the tables, in the grid's order.
    part = run_tiny_study(tmp_path, "--variants", "batchnorm")
    assert_clean_success(part)
    assert "1 already finished, 0 to run" in part.stdout
    tables = (results / "tables.md").read_text()
    assert tables.index("| none | 1 |") < tables.index("| batchnorm | 1 |")


def test_study_on_a_local_ray_instance(tmp_path):
    pytest.importorskip("ray")
    assert_clean_success(run_tiny_study(tmp_path, "--ray-address", "local"))
    assert (tmp_path / "results" / "tiny" / "runs.csv").is_file()
