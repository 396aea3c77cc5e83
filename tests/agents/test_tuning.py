"""Tuning with Optuna: search spaces as data, the holding score, budgets that survive a
restart, pruning on greedy evaluations, and exporting the best settings as a preset."""

from __future__ import annotations

import json
import signal
import time
from dataclasses import replace

import pytest

import agents.tuning.tuning as tuning
from agents.interrupts import Interrupted
from agents.study.grid import VARIANTS, Cell, cell_config
from agents.tuning.presets import (
    ENV_VAR,
    PRESETS_FILE,
    amend_preset,
    export_best,
    preset_settings,
    read_presets,
)
from agents.tuning.report import presets_table
from agents.tuning.selection import (
    ATTR,
    CLAIM,
    CONFIRM_SEED_BASE,
    best_settings,
    confirm,
    stale_after,
    top_trials,
    tune_and_confirm,
)
from agents.tuning.spaces import BATCH_STATISTICS, COMMON, decode, point_of, sample, space_for
from agents.tuning.tuning import (
    DIAGNOSIS_FIXES,
    TUNING_SEED_BASE,
    TuneSpec,
    counted,
    holding_score,
    open_study,
    run_trial,
    tune,
)
from qnorm import QnormError, make_norm

optuna = pytest.importorskip("optuna", reason="needs the tune extra: pip install -e '.[tune]'")

TINY = {
    "run.total_timesteps": 1200,
    "run.eval_freq": 300,
    "run.eval_episodes": 2,
    "dqn.learning_starts": 200,
    "run.state_freq": 0,
}


def test_every_variant_has_a_space_and_batch_statistics_add_adam_beta1():
    for variant in VARIANTS:
        space = space_for(variant)
        assert COMMON.items() <= space.items()
        batch = VARIANTS[variant]["network.norm"].startswith("batch")
        assert ("dqn.adam_beta1" in space) == batch, variant
    assert BATCH_STATISTICS.keys() == {"dqn.adam_beta1", "network.norm_momentum"}
    with pytest.raises(QnormError, match="unknown variant"):
        space_for("bogus")


def test_coupled_and_tuple_choices_decode_into_settings():
    assert decode("dqn.train_freq/dqn.gradient_steps", "256/128") == {
        "dqn.train_freq": 256,
        "dqn.gradient_steps": 128,
    }
    assert decode("network.hidden_sizes", "64,64") == {"network.hidden_sizes": (64, 64)}
    fixed = optuna.trial.FixedTrial(
        {
            "dqn.learning_rate": 1e-3,
            "dqn.batch_size": 64,
            "dqn.target_update_interval": 10,
            "dqn.train_freq/dqn.gradient_steps": "4/1",
            "dqn.lr_schedule": "linear",
            "dqn.exploration_fraction": 0.1,
            "dqn.exploration_final_eps": 0.05,
            "network.hidden_sizes": "128,128",
            "dqn.n_step": 3,
        }
    )
    settings = sample(fixed, space_for("layernorm"))
    assert settings["dqn.train_freq"] == 4 and settings["network.hidden_sizes"] == (128, 128)
    assert settings["dqn.lr_schedule"] == "linear" and settings["dqn.n_step"] == 3


def test_the_score_is_the_late_mean_so_a_collapse_scores_low():
    steady = [(25_000, 480.0), (50_000, 500.0), (75_000, 500.0), (100_000, 500.0)]
    collapse = [(25_000, 500.0), (50_000, 500.0), (75_000, 500.0), (100_000, 20.0)]
    assert holding_score(steady, 100_000) == 500.0
    assert holding_score(collapse, 100_000) == 20.0  # only the last quarter counts
    with pytest.raises(QnormError, match="last quarter"):
        holding_score([(10_000, 500.0)], 100_000)


def spec_in(tmp_path, trials: int, variant: str = "none") -> TuneSpec:
    return TuneSpec(
        env_id="CartPole-v1",
        variant=variant,
        trials=trials,
        overrides=TINY,
        storage=f"sqlite:///{tmp_path / 'tuning.db'}",
        runs_dir=str(tmp_path / "runs"),
        confirm_top=0,
    )


def test_a_tuning_continues_to_its_budget_on_tuning_seeds_only(tmp_path):
    lines = []
    study = tune(spec_in(tmp_path, 2), report=lines.append)
    assert counted(study) == 2 and lines[0].endswith("0 of 2 trials done")
    again = tune(spec_in(tmp_path, 3), report=lines.append)  # the same storage: one more
    assert counted(again) == 3 and "CartPole-v1__none: 2 of 3 trials done" in lines
    seeds = sorted(int(p.name.rpartition("seed")[2]) for p in (tmp_path / "runs").glob("*/*"))
    assert seeds == [TUNING_SEED_BASE, TUNING_SEED_BASE + 1, TUNING_SEED_BASE + 2]
    best = best_settings(again)
    assert best["score"] == max(t.value for t in again.trials)
    assert "dqn.learning_rate" in best["settings"]


class PruningTrial(optuna.trial.FixedTrial):
    """A trial whose pruner says stop at its first report."""

    def __init__(self, params):
        super().__init__(params, number=7)
        self.reports = []

    def report(self, value, step):
        self.reports.append((step, value))

    def should_prune(self):
        return True


def test_a_trial_is_pruned_at_its_first_greedy_evaluation(tmp_path):
    params = {
        "dqn.learning_rate": 1e-3,
        "dqn.batch_size": 32,
        "dqn.target_update_interval": 100,
        "dqn.train_freq/dqn.gradient_steps": "4/1",
        "dqn.lr_schedule": "constant",
        "dqn.exploration_fraction": 0.2,
        "dqn.exploration_final_eps": 0.05,
        "network.hidden_sizes": "64,64",
        "dqn.n_step": 1,
        "dqn.adam_beta1": 0.5,
        "network.norm_momentum": 0.01,
    }
    trial = PruningTrial(params)
    with pytest.raises(optuna.TrialPruned, match="pruned at step 300 of seed 1007"):
        run_trial(spec_in(tmp_path, 1, "batchnorm"), trial)
    assert [step for step, _ in trial.reports] == [300]


def test_the_best_trial_exports_as_a_preset(tmp_path):
    path = tmp_path / "tuned.json"
    best = {"settings": {"dqn.learning_rate": 1e-3, "network.hidden_sizes": (64, 64)}}
    entry = export_best(
        "CartPole-v1",
        "batchnorm",
        {**best, "score": 480.0, "trial": 4},
        50,
        "CartPole-v1__batchnorm",
        path,
    )
    assert entry["settings"]["network.hidden_sizes"] == [64, 64]
    assert read_presets(path) == json.loads(path.read_text())
    assert read_presets(path)["CartPole-v1"]["batchnorm"]["trials"] == 50


@pytest.fixture
def tuned_file(tmp_path, monkeypatch):
    path = tmp_path / "tuned_presets.json"
    best = {"settings": {"dqn.learning_rate": 7e-4, "dqn.adam_beta1": 0.5}, "score": 490.0}
    export_best("CartPole-v1", "batchnorm", {**best, "trial": 3}, 50, "study", path)
    monkeypatch.setenv(ENV_VAR, str(path))
    return path


def test_an_amendment_applies_on_the_tuned_preset_and_outlives_an_export(tuned_file):
    from agents.cli import config_from_flags

    amend_preset("CartPole-v1", "batchnorm", {"dqn.n_step": 3}, "held on 4 of 5", tuned_file)
    flags = {"run.env_id": "CartPole-v1", "network.norm": "batchnorm"}
    amended = config_from_flags(flags)
    assert amended.dqn.n_step == 3 and amended.dqn.learning_rate == 7e-4
    assert config_from_flags({**flags, "dqn.n_step": 1}).dqn.n_step == 1  # a flag still wins
    assert config_from_flags({**flags, "network.norm": "none"}).dqn.n_step == 1  # its variant
    retuned = {"settings": {"dqn.learning_rate": 5e-4}, "score": 495.0, "trial": 9}
    entry = export_best("CartPole-v1", "batchnorm", retuned, 50, "study", tuned_file)
    assert entry["amended"] == {"dqn.n_step": 3} and entry["amended_because"] == "held on 4 of 5"
    searched = {"settings": {"dqn.learning_rate": 5e-4, "dqn.n_step": 1}, "score": 1, "trial": 2}
    entry = export_best("CartPole-v1", "batchnorm", searched, 50, "study", tuned_file)
    assert "amended" not in entry  # a tuning that searched n_step decides it
    table = presets_table(read_presets(tuned_file))
    assert table.splitlines()[2].endswith(" | - |") and "Amended" not in table
    header, row = (line.split(" | ") for line in table.splitlines()[::2][:2])
    assert row[header.index("n-step")] == "1"  # the searched value, in its own column


def test_an_amendment_needs_a_preset_and_its_evidence(tuned_file):
    with pytest.raises(QnormError, match="no tuned preset for CartPole-v1 none"):
        amend_preset("CartPole-v1", "none", {"dqn.n_step": 3}, "why", tuned_file)
    with pytest.raises(QnormError, match="--because"):
        amend_preset("CartPole-v1", "batchnorm", {"dqn.n_step": 3}, " ", tuned_file)
    assert "amended" not in read_presets(tuned_file)["CartPole-v1"]["batchnorm"]


def test_train_flags_take_the_variants_tuned_preset_and_explicit_flags_win(tuned_file):
    from agents.cli import config_from_flags
    from agents.presets import preset_for

    zoo_lr = preset_for("CartPole-v1")["dqn.learning_rate"]
    tuned = config_from_flags({"run.env_id": "CartPole-v1", "network.norm": "batchnorm"})
    assert tuned.dqn.learning_rate == 7e-4 and tuned.dqn.adam_beta1 == 0.5
    assert tuned.dqn.batch_size == preset_for("CartPole-v1")["dqn.batch_size"]  # rest: zoo
    explicit = config_from_flags(
        {"run.env_id": "CartPole-v1", "network.norm": "batchnorm", "dqn.learning_rate": 1e-3}
    )
    assert explicit.dqn.learning_rate == 1e-3 and explicit.dqn.adam_beta1 == 0.5
    off = config_from_flags(
        {"run.env_id": "CartPole-v1", "network.norm": "batchnorm", "run.tuned_preset": False}
    )
    assert off.dqn.learning_rate == zoo_lr and off.dqn.adam_beta1 == 0.9
    other = config_from_flags({"run.env_id": "CartPole-v1", "network.norm": "layernorm"})
    assert other.dqn.learning_rate == zoo_lr  # no tuned preset for that variant
    after = config_from_flags(
        {
            "run.env_id": "CartPole-v1",
            "network.norm": "batchnorm",
            "network.norm_placement": "after",
        }
    )
    assert after.dqn.learning_rate == zoo_lr  # batchnorm_after is a variant of its own


def test_study_cells_keep_the_env_preset_unless_their_protocol_asks(tuned_file):
    from agents.study.grid import Cell, cell_config

    cell = Cell("CartPole-v1", "batchnorm", 0)
    assert cell_config(cell, "", {}).dqn.learning_rate != 7e-4
    assert cell_config(cell, "", {"run.tuned_preset": True}).dqn.learning_rate == 7e-4


def test_holding_arms_train_on_their_variants_tuned_preset_with_their_one_change(tuned_file):
    from agents.study.grid import HOLDING_ARMS, Cell, cell_config
    from agents.study.study import HOLDING, HOLDING_FIRST_SEED, check_tuned
    from agents.tuning.selection import CONFIRM_SEED_BASE

    assert HOLDING_FIRST_SEED > CONFIRM_SEED_BASE + 1000  # tuning seeds, above all others
    bn_arms = [arm for arm in HOLDING_ARMS if arm.startswith("bnt_")]
    check_tuned(HOLDING["envs"], ["batchnorm", *bn_arms])  # the arms: batchnorm's
    configs = {
        arm: cell_config(Cell("CartPole-v1", arm, HOLDING_FIRST_SEED), "", HOLDING["overrides"])
        for arm in ("batchnorm", *HOLDING_ARMS)
    }
    brn_arms = {arm: configs.pop(arm) for arm in HOLDING_ARMS if arm not in bn_arms}
    assert set(brn_arms) == {"brnt_n_step", "brnt_n_step_5", "brnt_lagged"}
    for config in brn_arms.values():  # joint Batch Renormalization's arms
        assert (config.network.norm, config.dqn.bn_mode) == ("batchrenorm", "joint")
    assert brn_arms["brnt_n_step_5"].dqn.n_step == 5 and brn_arms["brnt_lagged"].dqn.joint_target
    assert not brn_arms["brnt_n_step"].dqn.joint_target
    assert {c.network.norm for c in configs.values()} == {"batchnorm"}
    assert all(c.dqn.adam_beta1 == 0.5 for c in configs.values())  # the tuned preset's
    assert configs["bnt_lr_half"].dqn.learning_rate == pytest.approx(3.5e-4)  # half of 7e-4
    assert configs["bnt_batch_1024"].dqn.batch_size == 1024
    assert configs["bnt_dueling"].network.dueling and not configs["batchnorm"].network.dueling
    assert (configs["bnt_soft_target"].dqn.tau, configs["batchnorm"].dqn.tau) == (0.005, 1.0)
    assert (configs["bnt_n_step"].dqn.n_step, configs["batchnorm"].dqn.n_step) == (3, 1)
    with pytest.raises(QnormError, match="no tuned preset for CartPole-v1 none"):
        check_tuned(["CartPole-v1"], ["none", "bnt_dueling"])
    with pytest.raises(QnormError, match="preset for Acrobot-v1 batchnorm; tune"):  # once
        check_tuned(["Acrobot-v1"], ["batchnorm", "bnt_dueling"])


def test_a_run_can_take_another_variants_tuned_preset(tuned_file):
    from agents.cli import config_from_flags
    from agents.study.grid import Cell, cell_config
    from agents.study.study import check_tuned

    flags = {"run.env_id": "CartPole-v1", "network.norm": "none"}
    borrowed = config_from_flags({**flags, "run.tuned_preset_from": "batchnorm"})
    assert (borrowed.network.norm, borrowed.dqn.learning_rate) == ("none", 7e-4)
    assert borrowed.run.tuned_preset_from == "batchnorm"  # reported in config.json
    assert config_from_flags(flags).dqn.learning_rate != 7e-4  # its own: none tuned
    with pytest.raises(QnormError, match="no tuned preset for CartPole-v1 layernorm to take"):
        config_from_flags({**flags, "run.tuned_preset_from": "layernorm"})
    with pytest.raises(QnormError, match="unknown variant 'layer'; known: none, batchnorm"):
        config_from_flags({**flags, "run.tuned_preset_from": "layer"})
    with pytest.raises(QnormError, match="drop --no-tuned-preset"):
        config_from_flags(
            {**flags, "run.tuned_preset_from": "batchnorm", "run.tuned_preset": False}
        )
    with pytest.raises(QnormError, match="no tuned preset for CartPole-v1 layernorm; tune"):
        check_tuned(["CartPole-v1"], ["none_at_layernorm"])  # the control borrows layernorm's
    amend_preset("CartPole-v1", "batchnorm", {"dqn.n_step": 3}, "held", tuned_file)
    export_best(
        "CartPole-v1", "layernorm", {"settings": {"dqn.batch_size": 32}}, 9, "s", tuned_file
    )
    check_tuned(["CartPole-v1"], ["none_at_layernorm", "batchnorm_at_layernorm"])
    config = cell_config(
        Cell("CartPole-v1", "batchnorm_at_layernorm", 0), "", {"run.tuned_preset": True}
    )
    assert (config.network.norm, config.dqn.batch_size, config.dqn.n_step) == ("batchnorm", 32, 1)


def test_a_study_on_tuned_presets_refuses_variants_without_one(tuned_file, tmp_path):
    from agents.study.study import FAIR, StudySpec, check_tuned, run_study

    assert FAIR["overrides"]["run.tuned_preset"] is True
    check_tuned(["CartPole-v1"], ["batchnorm"])  # exported by the fixture
    spec = StudySpec(
        name="fair",
        envs=["CartPole-v1"],
        variants=["none", "batchnorm"],
        seeds=1,
        overrides=FAIR["overrides"],
        runs_dir=str(tmp_path / "runs"),
        results_dir=str(tmp_path / "results"),
    )
    with pytest.raises(QnormError, match="no tuned preset for CartPole-v1 none; tune them"):
        run_study(spec, report=lambda line: None)
    assert not (tmp_path / "runs").exists()


def test_a_trial_cut_short_by_a_signal_is_failed_and_not_counted(tmp_path, monkeypatch):
    def interrupted(spec, trial):
        raise Interrupted(signal.SIGINT, True)

    monkeypatch.setattr(tuning, "run_trial", interrupted)
    with pytest.raises(Interrupted):
        tune(spec_in(tmp_path, 2), report=lambda line: None)
    study = tuning.open_study(spec_in(tmp_path, 2), create=False)
    states = [t.state.name for t in study.trials]
    assert states == ["FAIL", "WAITING", "WAITING"] and counted(study) == 0
    # the start point cut short runs again: it is queued behind the second start point
    fixed = [t.system_attrs["fixed_params"] for t in study.trials]
    assert fixed[2] == fixed[0] != fixed[1]


# These tests draw points with study.ask(), which Optuna warns about on a storage with
# heartbeats (they run inside Study.optimize, as tune() does); the draws are what they check.
ASKS_DIRECTLY = pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")


def first_points(spec, workers: int) -> list[dict]:
    """The first point each of ``workers`` processes' samplers draws on one shared study."""
    studies = [open_study(spec) for _ in range(workers)]  # all open before any trial exists
    return [sample(study.ask(), space_for(spec.variant)) for study in studies]


@ASKS_DIRECTLY
def test_workers_sharing_a_study_draw_different_points(tmp_path):
    one, other = first_points(spec_in(tmp_path, 2), workers=2)
    assert one != other


@ASKS_DIRECTLY
def test_a_seeded_tuning_is_reproducible_and_a_resumed_one_does_not_replay(tmp_path):
    seeded = [replace(spec_in(tmp_path / name, 2), sampler_seed=5) for name in ("a", "b")]
    first = first_points(seeded[0], 1)
    assert first == first_points(seeded[1], 1)
    resumed = first_points(seeded[0], 1)  # a second process: one trial is stored already
    assert resumed != first


@ASKS_DIRECTLY
def test_every_tuning_starts_at_the_env_preset_then_with_the_diagnosis_fixes(tmp_path):
    """Every variant's first trials are its env's preset, then the preset with the fixes the
    diagnosis found, so all start from the same points."""
    for env_id in ("CartPole-v1", "Acrobot-v1", "LunarLander-v3"):
        for variant in ("none", "batchnorm", "batchrenorm_joint"):
            config = cell_config(Cell(env_id, variant, 0), "", {})
            point = point_of(config, space_for(variant))
            for key, value in sample(optuna.trial.FixedTrial(point), space_for(variant)).items():
                section, name = key.split(".")
                held = getattr(getattr(config, section), name)
                if key == "network.norm_momentum":  # 0 in a config: the kind's own default
                    held = held or make_norm(config.network.norm, 1).momentum
                assert value == held, (env_id, variant, key)
    spec = spec_in(tmp_path, 1, "batchnorm")
    space = space_for("batchnorm")
    study = open_study(spec)
    first, second = (sample(study.ask(), space) for _ in range(2))  # the enqueued points
    preset = point_of(cell_config(Cell("CartPole-v1", "batchnorm", 0), "", TINY), space)
    assert first == sample(optuna.trial.FixedTrial(preset), space)
    assert second == {**first, "dqn.lr_schedule": "linear", "dqn.batch_size": 256}
    assert second == {**first, **DIAGNOSIS_FIXES}
    outside = cell_config(Cell("CartPole-v1", "none", 0), "", {"dqn.learning_rate": 0.5})
    assert point_of(outside, space_for("none")) is None


def finished_study(values: dict[int, float], confirmations: dict[int, list[float]]):
    """An in-memory study of finished trials (number -> score) with stored confirmations."""
    study = optuna.create_study(direction="maximize")
    lr = optuna.distributions.FloatDistribution(1e-4, 3e-3, log=True)
    for number, value in sorted(values.items()):
        params = {"dqn.learning_rate": 1e-4 * (number + 1)}
        trial = optuna.trial.create_trial(
            params=params, distributions={"dqn.learning_rate": lr}, value=value
        )
        study.add_trial(trial)
    for number, scores in confirmations.items():
        study.set_user_attr(f"confirm/{number}", {"seeds": [], "scores": scores})
    return study


def test_the_export_takes_the_best_mean_over_seeds_not_the_luckiest_seed():
    lucky_then_collapsed = {0: 500.0, 1: 450.0, 2: 100.0}
    study = finished_study(lucky_then_collapsed, {0: [120.0, 80.0], 1: [460.0, 470.0]})
    best = best_settings(study)
    assert best["trial"] == 1 and best["scores"] == [450.0, 460.0, 470.0]
    assert best["score"] == pytest.approx(460.0)
    assert best["settings"] == {"dqn.learning_rate": pytest.approx(2e-4)}
    unconfirmed = best_settings(finished_study(lucky_then_collapsed, {}))
    assert unconfirmed["trial"] == 0 and unconfirmed["scores"] == [500.0]
    assert best_settings(optuna.create_study()) is None


def test_the_best_trials_are_confirmed_once_on_fresh_seeds(tmp_path):
    spec = replace(spec_in(tmp_path, 3), confirm_top=2, confirm_seeds=1)
    lines = []
    study = tune_and_confirm(spec, report=lines.append)
    attrs = study.user_attrs.items()
    confirmed = {int(k.removeprefix(ATTR)): v for k, v in attrs if k.startswith(ATTR)}
    ranked = sorted(study.trials, key=lambda t: -t.value)
    assert sorted(confirmed) == sorted(t.number for t in ranked[:2])
    for number, stored in confirmed.items():
        assert stored["seeds"] == [CONFIRM_SEED_BASE + number] and len(stored["scores"]) == 1
    runs = sorted(p.name for p in (tmp_path / "runs").glob("*/confirm*"))
    assert len(runs) == 2 and "confirming the best 2 trials on 1 more seeds" in lines
    means = {n: (study.trials[n].value + v["scores"][0]) / 2 for n, v in confirmed.items()}
    assert best_settings(study)["score"] == pytest.approx(max(means.values()))
    tune_and_confirm(spec, report=lines.append)  # continued: nothing runs twice
    assert sorted(p.name for p in (tmp_path / "runs").glob("*/confirm*")) == runs


def test_workers_on_one_study_split_the_confirmations(tmp_path):
    spec = replace(spec_in(tmp_path, 2), confirm_top=2, confirm_seeds=1)
    study = tune(spec, report=[].append)
    first, second = (t.number for t in top_trials(study, 2))
    study.set_user_attr(f"{CLAIM}{first}", {"worker": "other", "at": time.time()})
    lines = []
    assert confirm(spec, study, lines.append, worker="me") == [first]
    assert f"{ATTR}{second}" in study.user_attrs and f"{ATTR}{first}" not in study.user_attrs
    assert f"  trial {first}: being confirmed by another worker (run again to see it)" in lines
    assert study.user_attrs[f"{CLAIM}{second}"]["worker"] == "me"
    # the other worker is gone: a claim older than twice its seeds' time is taken over
    longest = max(t.duration.total_seconds() for t in study.trials)
    assert stale_after(spec, study) == pytest.approx(2 * spec.confirm_seeds * longest)
    old = time.time() - stale_after(spec, study) - 1
    study.set_user_attr(f"{CLAIM}{first}", {"worker": "other", "at": old})
    assert longest > 0 and confirm(spec, study, lines.append, worker="me") == []
    assert f"{ATTR}{first}" in study.user_attrs
    runs = sorted(p.name for p in (tmp_path / "runs").glob("*/confirm*"))
    assert runs == sorted(f"confirm{n:04d}_seed{CONFIRM_SEED_BASE + n}" for n in (0, 1))


def test_an_interrupted_confirmation_gives_up_its_claim(tmp_path, monkeypatch):
    import agents.tuning.selection as selection

    spec = replace(spec_in(tmp_path, 1), confirm_top=1, confirm_seeds=1)
    study = tune(spec, report=[].append)

    def cut_short(*args, **kwargs):
        raise Interrupted(signal.SIGINT, True)

    monkeypatch.setattr(selection, "train_settings", cut_short)
    with pytest.raises(Interrupted):
        confirm(spec, study, [].append, worker="stopped")
    assert study.user_attrs[f"{CLAIM}0"]["worker"] == ""
    monkeypatch.undo()
    assert confirm(spec, study, [].append, worker="next") == []  # taken at once, not skipped
    assert f"{ATTR}0" in study.user_attrs


def test_the_shipped_tuned_presets_are_valid_and_taken_by_plain_train_flags(monkeypatch):
    """Every entry of agents/tuned_presets.json builds a config, in its own space, and the
    plain flags of its variant (``--env-id E --norm N``) take exactly its settings (an
    amendment over the tuned value it replaces)."""
    from agents.cli import config_from_flags

    monkeypatch.setenv(ENV_VAR, str(PRESETS_FILE))
    shipped = read_presets()
    assert set(shipped["CartPole-v1"]) >= {"none", "batchnorm", "batchrenorm_joint"}  # not empty
    for env_id, variants in shipped.items():
        for variant, entry in variants.items():
            space_keys = {key for name in space_for(variant) for key in name.split("/")}
            assert set(entry["settings"]) <= space_keys, (env_id, variant)
            config = config_from_flags({"run.env_id": env_id, **VARIANTS[variant]})
            for key, value in preset_settings(entry).items():  # tuned, then amended
                section, name = key.split(".")
                held = getattr(getattr(config, section), name)
                assert held == (tuple(value) if isinstance(value, list) else value), key
            assert len(entry["scores"]) >= 1 and entry["trials"] >= 1


def test_the_preset_choice_arm_is_batchnorms_first_cartpole_preset_in_full(monkeypatch):
    """The arm sets every key BatchNorm's search space tunes, so nothing of the shipped
    preset it is compared with leaks into it, and it runs on tuning seeds no study used."""
    from agents.study.grid import BN_FIRST_TUNING_CARTPOLE
    from agents.study.study import (
        HOLDING_FIRST_SEED,
        PRESET_CHOICE,
        PRESET_CHOICE_FIRST_SEED,
        check_tuned,
    )

    monkeypatch.setenv(ENV_VAR, str(PRESETS_FILE))
    space_keys = {key for name in space_for("batchnorm") for key in name.split("/")}
    assert space_keys <= set(BN_FIRST_TUNING_CARTPOLE)
    assert PRESET_CHOICE_FIRST_SEED >= HOLDING_FIRST_SEED + 20  # past 7000-7004, 7010-7019
    check_tuned(PRESET_CHOICE["envs"], PRESET_CHOICE["variants"])
    seed, overrides = PRESET_CHOICE_FIRST_SEED, PRESET_CHOICE["overrides"]
    arm = cell_config(Cell("CartPole-v1", "bn_first_tuning_n5", seed), "", overrides)
    shipped = cell_config(Cell("CartPole-v1", "batchnorm", seed), "", overrides)
    for key, value in BN_FIRST_TUNING_CARTPOLE.items():
        section, name = key.split(".")
        assert getattr(getattr(arm, section), name) == value, key
    assert (arm.network.norm, shipped.network.norm) == ("batchnorm", "batchnorm")
    # The choice went to the first tuning with 5-step returns (results/preset_choice: 7 of 10
    # final policies at 475 against 6 of 10), so that is what plain flags ship.
    shipped_settings = preset_settings(read_presets()["CartPole-v1"]["batchnorm"])
    assert set(shipped_settings) == set(BN_FIRST_TUNING_CARTPOLE)
    for key, value in BN_FIRST_TUNING_CARTPOLE.items():
        section, name = key.split(".")
        assert getattr(getattr(shipped, section), name) == value, key
