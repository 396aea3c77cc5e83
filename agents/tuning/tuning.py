"""One Optuna study per env and variant: TPE sampling, pruning on the greedy evaluations.

A trial is an ordinary training run (the study cell's config with the sampled settings) on
seeds of its own, ``TUNING_SEED_BASE`` and up, so the seeds a fair study evaluates on (0, 1,
...) are never the ones the settings were chosen on. The score rewards a policy that holds:
the mean greedy return over the last quarter of training, not the best evaluation, so a run
that peaks and collapses scores low. The storage (SQLite by default) keeps every trial, so an
interrupted tuning continues where it stopped, and a shared database URL lets several
machines work on one study.
"""

from __future__ import annotations

import csv
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

from agents.interrupts import Interrupted
from agents.study.grid import Cell, cell_config
from agents.training import train
from agents.tuning.spaces import point_of, sample, space_for
from qnorm import QnormError

TUNING_SEED_BASE = 1000  # a fair study evaluates seeds 0..N-1: never these
HOLD_FRACTION = 0.25  # the score averages the evaluations in this last part of training


@dataclass
class TuneSpec:
    """What to tune, with which budget, and where the trials are kept."""

    env_id: str
    variant: str
    trials: int = 50  # the same budget for every variant
    seeds_per_trial: int = 1
    # After the budget, the best trials run again on fresh tuning seeds, and the export takes
    # the best mean over all of a trial's seeds (agents/tuning/selection.py): one lucky seed
    # does not become a preset. The same for every variant.
    confirm_top: int = 3
    confirm_seeds: int = 2
    overrides: dict | None = None  # study-wide settings, e.g. run.total_timesteps
    storage: str = "sqlite:///results/tuning/tuning.db"
    runs_dir: str = "runs/tune"
    # None: every process samples on fresh entropy, so workers sharing one study never draw
    # the same points. A seed makes a single worker reproducible; it is offset by the trials
    # already stored, so a resumed tuning does not replay its first random points. Workers
    # started together on one study need different seeds.
    sampler_seed: int | None = None

    @property
    def study_name(self) -> str:
        return f"{self.env_id}__{self.variant}"


def import_optuna():
    """Optuna, or a clear error naming the extra to install."""
    try:
        import optuna
    except ImportError:
        raise QnormError("tuning needs Optuna: pip install -e '.[tune]'") from None
    return optuna


def holding_score(evaluations: list[tuple[int, float]], total_steps: int) -> float:
    """Mean greedy return of the evaluations in the last HOLD_FRACTION of training."""
    late = [value for step, value in evaluations if step > (1 - HOLD_FRACTION) * total_steps]
    if not late:
        raise QnormError(
            "a trial needs greedy evaluations in the last quarter of training: lower run.eval_freq"
        )
    return sum(late) / len(late)


def open_study(spec: TuneSpec, create: bool = True):
    """The Optuna study of ``spec``, created or loaded from its storage.

    The pruner waits for half of training: early evaluations say little about a policy that
    has to hold at the end.
    """
    optuna = import_optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if spec.storage.startswith("sqlite:///"):
        Path(spec.storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # heartbeats are marked experimental in Optuna 5
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(
            spec.storage,
            heartbeat_interval=60,  # a trial whose process died goes stale after the grace
            grace_period=180,  # period, and is run again once (Ctrl-C, a killed machine)
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=1
            ),
        )
    if not create:
        try:
            return optuna.load_study(study_name=spec.study_name, storage=storage)
        except KeyError:
            raise QnormError(f"{spec.storage} holds no tuning of {spec.study_name}") from None
    study = optuna.create_study(
        study_name=spec.study_name,
        storage=storage,
        direction="maximize",
        load_if_exists=True,
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=5, n_warmup_steps=total_steps(spec) // 2
        ),
    )
    study.sampler = optuna.samplers.TPESampler(seed=sampler_seed(spec, study))
    if not study.get_trials(deepcopy=False):  # a new study: its shared start points first
        for point in start_points(spec):
            study.enqueue_trial(point)
    return study


# The settings the diagnosis found to help BatchNorm hold its policy (results/diagnosis/):
# the learning rate falling linearly to 0, and a larger batch (the largest of the space).
DIAGNOSIS_FIXES: dict[str, object] = {"dqn.lr_schedule": "linear", "dqn.batch_size": 256}


def start_points(spec: TuneSpec) -> list[dict]:
    """The first trials of every variant's tuning: the env preset, then the preset with the
    diagnosis' fixes; each where the space holds it.

    Every variant starts from the same settings (those the first study ran them all with),
    so each search begins at a known baseline and every variant gets the same head start.
    """
    points = []
    for extra in ({}, DIAGNOSIS_FIXES):
        config = cell_config(
            Cell(spec.env_id, spec.variant, 0), "", {**(spec.overrides or {}), **extra}
        )
        point = point_of(config, space_for(spec.variant))
        if point is not None and point not in points:
            points.append(point)
    return points


def sampler_seed(spec: TuneSpec, study) -> int | None:
    """The TPE sampler's seed for this process (see ``TuneSpec.sampler_seed``)."""
    if spec.sampler_seed is None:
        return None
    return spec.sampler_seed + len(study.get_trials(deepcopy=False))


def total_steps(spec: TuneSpec) -> int:
    """Env steps of one trial's run."""
    return cell_config(
        Cell(spec.env_id, spec.variant, 0), "", spec.overrides or {}
    ).run.total_timesteps


def counted(study) -> int:
    """Trials that used up budget: finished or pruned."""
    optuna = import_optuna()
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def run_trial(spec: TuneSpec, trial) -> float:
    """Train the sampled settings on the trial's seeds; report each evaluation for pruning."""
    optuna = import_optuna()
    settings = {**(spec.overrides or {}), **sample(trial, space_for(spec.variant))}
    scores = []
    for index in range(spec.seeds_per_trial):
        seed = TUNING_SEED_BASE + trial.number * spec.seeds_per_trial + index
        offset = index * total_steps(spec)  # one step axis across the seeds

        def report(step: int, mean_return: float, offset=offset, seed=seed) -> bool:
            trial.report(mean_return, offset + step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step:,} of seed {seed}")
            return False

        name = f"trial{trial.number:04d}_seed{seed}"
        scores.append(train_settings(spec, settings, seed, name, report))
    return sum(scores) / len(scores)


def train_settings(spec: TuneSpec, settings: dict, seed: int, name: str, should_stop=None):
    """One training run of ``settings`` on ``seed`` (a fresh run directory); its holding score."""
    run_dir = Path(spec.runs_dir) / spec.study_name / name
    shutil.rmtree(run_dir, ignore_errors=True)  # a retried run starts clean
    config = cell_config(Cell(spec.env_id, spec.variant, seed), str(run_dir), settings)
    result = train(config, should_stop=should_stop)
    return holding_score(result.evaluations, config.run.total_timesteps)


def tune(spec: TuneSpec, report=print):
    """Run trials until ``spec.trials`` are finished or pruned; return the study."""
    optuna = import_optuna()
    study = open_study(spec)
    done = counted(study)
    report(f"{spec.study_name}: {done} of {spec.trials} trials done")

    def announce(study, trial) -> None:
        pruned = trial.state == optuna.trial.TrialState.PRUNED
        value = "no value" if trial.value is None else f"{trial.value:.1f}"
        what = f"last evaluation {value}" if pruned else f"score {value}"
        report(f"  trial {trial.number}: {trial.state.name.lower()}, {what}")

    if done < spec.trials:
        budget = optuna.study.MaxTrialsCallback(
            spec.trials, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        )
        current = []

        def objective(trial) -> float:
            current[:] = [trial.number]
            return run_trial(spec, trial)

        try:
            study.optimize(
                objective, n_trials=spec.trials - done, callbacks=[budget, announce], catch=()
            )
        except Interrupted:  # Ctrl-C or SIGTERM: the trial cut short is failed, not left running
            if current:
                study.tell(current[0], state=optuna.trial.TrialState.FAIL)
                requeue_start_point(study, current[0])
            raise
    return study


def requeue_start_point(study, number: int) -> None:
    """Enqueue a failed trial's point again if it was a start point, so no variant loses one."""
    fixed = study.trials[number].system_attrs.get("fixed_params")
    if fixed:
        study.enqueue_trial(fixed)


def write_trials_csv(study, path: Path) -> None:
    """Every trial of ``study``: number, state, score (or last evaluation), its settings."""
    trials = study.get_trials(deepcopy=False)
    names = sorted({name for trial in trials for name in trial.params})
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["trial", "state", "value", *names])
        for trial in trials:
            value = "" if trial.value is None else f"{trial.value:.2f}"
            params = [trial.params.get(name, "") for name in names]
            writer.writerow([trial.number, trial.state.name.lower(), value, *params])
