"""scripts/tune.py end to end: trials into a storage, a restart that continues, the export."""

import json

import pytest
from script_helpers import TUNE, assert_clean_success, assert_one_error_line, run_script

pytest.importorskip("optuna", reason="needs the tune extra: pip install -e '.[tune]'")

TINY = [
    "--set",
    "run.total_timesteps=800",
    "run.eval_freq=200",
    "run.eval_episodes=2",
    "dqn.learning_starts=100",
]


def test_tune_runs_trials_continues_them_and_exports_the_best(tmp_path):
    where = ["--storage", f"sqlite:///{tmp_path / 't.db'}", "--runs-dir", str(tmp_path / "runs")]
    args = ["--env-id", "CartPole-v1", "--variant", "layernorm", *where, *TINY]
    csv_path = tmp_path / "trials.csv"
    args = [*args, "--trials-csv", str(csv_path)]
    first = run_script(TUNE, *args, "--trials", "1", "--confirm-top", "0")
    assert_clean_success(first)
    assert "0 of 1 trials done" in first.stdout and "trial 0: complete" in first.stdout
    confirm = ["--confirm-top", "1", "--confirm-seeds", "1"]
    second = run_script(TUNE, *args, "--trials", "2", *confirm)
    assert "1 of 2 trials done" in second.stdout and "trial 1: complete" in second.stdout
    assert "confirming the best 1 trials on 1 more seeds" in second.stdout
    rows = csv_path.read_text().splitlines()
    assert rows[0].startswith("trial,state,value,") and len(rows) == 3
    assert rows[1].startswith("0,complete,") and rows[2].startswith("1,complete,")
    presets = tmp_path / "tuned.json"
    summary = tmp_path / "presets.md"
    exported = run_script(TUNE, *args, "--export", "--presets", presets, "--summary", summary)
    assert_clean_success(exported)
    row = summary.read_text().splitlines()[2]
    assert row.startswith("| CartPole-v1 | layernorm | 2 | ") and row.endswith(" | - | - |")
    entry = json.loads(presets.read_text())["CartPole-v1"]["layernorm"]
    assert entry["trials"] == 2 and "dqn.learning_rate" in entry["settings"]
    # kept outside the default storage, the study is named with the storage it lives in
    assert entry["study"] == f"CartPole-v1__layernorm in sqlite:///{tmp_path / 't.db'}"
    assert len(entry["scores"]) == 2  # the trial's seed and its confirmation


def test_export_of_a_study_never_run_is_one_error_line(tmp_path):
    ran = run_script(
        TUNE,
        *("--env-id", "CartPole-v1", "--variant", "none", "--export"),
        *("--storage", f"sqlite:///{tmp_path / 't.db'}", "--presets", tmp_path / "p.json"),
    )
    assert "holds no tuning of CartPole-v1__none" in assert_one_error_line(ran)
    assert not (tmp_path / "p.json").exists()


def test_amend_adds_a_typed_setting_with_its_evidence_to_the_preset(tmp_path):
    from agents.tuning.presets import export_best

    presets, summary = tmp_path / "tuned.json", tmp_path / "presets.md"
    best = {"settings": {"dqn.learning_rate": 1e-3}, "score": 400.0, "trial": 3}
    export_best("CartPole-v1", "batchnorm", best, 30, "CartPole-v1__batchnorm", presets)
    where = ["--presets", presets, "--summary", summary]
    args = ["--env-id", "CartPole-v1", "--variant", "batchnorm", *where]
    before = presets.read_text()
    refused = run_script(TUNE, *args, "--amend", "dqn.no_such=1", "--because", "x")
    assert "unknown setting 'dqn.no_such'" in assert_one_error_line(refused)
    zero = run_script(TUNE, *args, "--amend", "dqn.n_step=0", "--because", "x")
    assert "n_step must be positive" in assert_one_error_line(zero)
    no_reason = run_script(TUNE, *args, "--amend", "dqn.n_step=3")
    assert "--because" in assert_one_error_line(no_reason)
    assert presets.read_text() == before  # refusals change nothing
    ran = run_script(TUNE, *args, "--amend", "dqn.n_step=3", "--because", "the holding study")
    assert_clean_success(ran)
    entry = json.loads(presets.read_text())["CartPole-v1"]["batchnorm"]
    assert entry["amended"] == {"dqn.n_step": 3} and entry["settings"] == best["settings"]
    lines = summary.read_text().splitlines()
    assert lines[2].endswith(" | dqn.n_step 3 |")
    assert "- CartPole-v1 batchnorm: dqn.n_step 3, because the holding study" in lines


def test_amend_checks_the_setting_against_the_variant_it_amends(tmp_path):
    """--joint-target needs the joint mode: refused for batchnorm, taken for joint BatchRenorm."""
    from agents.tuning.presets import export_best

    presets, summary = tmp_path / "tuned.json", tmp_path / "presets.md"
    best = {"settings": {"dqn.learning_rate": 1e-3}, "score": 400.0, "trial": 3}
    for variant in ("batchnorm", "batchrenorm_joint"):
        export_best("CartPole-v1", variant, best, 30, f"CartPole-v1__{variant}", presets)
    lagged = ["--amend", "dqn.joint_target=True", "--because", "a lagged copy"]
    where = ["--env-id", "CartPole-v1", "--presets", presets, "--summary", summary]
    refused = run_script(TUNE, *where, "--variant", "batchnorm", *lagged)
    assert "joint_target needs bn_mode joint" in assert_one_error_line(refused)
    assert_clean_success(run_script(TUNE, *where, "--variant", "batchrenorm_joint", *lagged))
    entries = json.loads(presets.read_text())["CartPole-v1"]
    assert entries["batchrenorm_joint"]["amended"] == {"dqn.joint_target": True}
    assert "amended" not in entries["batchnorm"]
