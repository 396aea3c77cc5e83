"""Which tuned settings become the preset: the best trials confirmed on fresh seeds.

A trial's score comes from one seed, and the best of many one-seed scores is biased upwards:
the winner is often a lucky seed. So after the trial budget the ``confirm_top`` best trials
run again, unpruned, on ``confirm_seeds`` more tuning seeds each, and the preset is the
confirmed trial with the best mean over all its seeds. Confirmations are stored in the
study's user attributes, so an interrupted confirmation continues where it stopped.

Several workers on one study split the confirmations: a worker claims a trial (a user
attribute naming it) before running its seeds and leaves trials claimed by others, unless
a claim is older than twice the time its seeds take at the pace of the longest finished
trial (its worker is taken to be gone). A worker stopped mid-confirmation gives its claim up.
"""

from __future__ import annotations

import math
import os
import socket
import time
import uuid

from agents.tuning.spaces import decode_params
from agents.tuning.tuning import TuneSpec, counted, import_optuna, train_settings, tune

CONFIRM_SEED_BASE = 5000  # above every trial's seed (TUNING_SEED_BASE + trial number), below 0..N
ATTR = "confirm/"  # study user attribute per confirmed trial: confirm/<trial number>
CLAIM = "claim/confirm/"  # study user attribute per trial a worker is confirming


def top_trials(study, count: int) -> list:
    """The ``count`` finished trials with the highest scores, best first."""
    optuna = import_optuna()
    finished = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    ranked = sorted((t for t in finished if math.isfinite(t.value)), key=lambda t: -t.value)
    return ranked[:count]


def confirm_seeds(spec: TuneSpec, number: int) -> list[int]:
    """The fresh tuning seeds that confirm trial ``number``."""
    return [CONFIRM_SEED_BASE + number * spec.confirm_seeds + i for i in range(spec.confirm_seeds)]


def confirm(spec: TuneSpec, study, report=print, worker: str = "") -> list[int]:
    """Run the best trials on fresh seeds (those not confirmed or claimed yet), store their
    scores, and return the trials left to other workers."""
    worker = worker or worker_id()
    elsewhere = []
    for trial in top_trials(study, spec.confirm_top):
        key = f"{ATTR}{trial.number}"
        if key in study.user_attrs:
            continue
        if not claim(study, trial.number, worker, stale_after(spec, study)):
            elsewhere.append(trial.number)
            continue
        settings = {**(spec.overrides or {}), **decode_params(trial.params)}
        seeds = confirm_seeds(spec, trial.number)
        try:
            scores = [
                train_settings(spec, settings, seed, f"confirm{trial.number:04d}_seed{seed}")
                for seed in seeds
            ]
        except BaseException:  # Ctrl-C or a failing run: the next worker may take it at once
            release(study, trial.number)
            raise
        study.set_user_attr(key, {"seeds": seeds, "scores": scores})
        shown = ", ".join(f"{score:.1f}" for score in scores)
        report(f"  trial {trial.number} (score {trial.value:.1f}) on seeds {seeds}: {shown}")
    for number in elsewhere:
        report(f"  trial {number}: being confirmed by another worker (run again to see it)")
    return elsewhere


def worker_id() -> str:
    """A name for this process, unique across machines sharing a study."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def claim(study, number: int, worker: str, stale: float) -> bool:
    """Claim trial ``number``'s confirmation for ``worker``; False if another worker holds
    it (a claim ``stale`` seconds old is taken over).

    Write, then read back: of two workers claiming at once, the later write wins and the
    other sees it and steps aside.
    """
    key = f"{CLAIM}{number}"
    held = study.user_attrs.get(key)
    if held and held["worker"] != worker and time.time() - held["at"] < stale:
        return False
    study.set_user_attr(key, {"worker": worker, "at": time.time()})
    return study.user_attrs[key]["worker"] == worker


def release(study, number: int) -> None:
    """Give up the claim on trial ``number`` (a claim as old as time, taken over by anyone)."""
    study.set_user_attr(f"{CLAIM}{number}", {"worker": "", "at": 0.0})


def stale_after(spec: TuneSpec, study) -> float:
    """Seconds after which a claim is taken over: twice the time a confirmation's seeds
    take at the pace of the longest finished trial."""
    optuna = import_optuna()
    finished = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    longest = max((t.duration.total_seconds() for t in finished if t.duration), default=0.0)
    return 2 * spec.confirm_seeds * longest


def all_scores(study, trial) -> list[float]:
    """A trial's score, then its confirmation scores (if it was confirmed)."""
    confirmed = study.user_attrs.get(f"{ATTR}{trial.number}", {})
    return [trial.value, *confirmed.get("scores", [])]


def best_settings(study) -> dict | None:
    """The settings to export, with their mean score over their seeds; None before any trial.

    Confirmed trials compete on their mean over all their seeds; before any confirmation the
    best trial's one-seed score decides.
    """
    ranked = top_trials(study, len(study.trials))
    if not ranked:
        return None
    confirmed = [t for t in ranked if f"{ATTR}{t.number}" in study.user_attrs] or ranked[:1]
    means = {t.number: sum(all_scores(study, t)) / len(all_scores(study, t)) for t in confirmed}
    best = max(confirmed, key=lambda t: (means[t.number], t.value))
    return {
        "settings": decode_params(best.params),
        "score": means[best.number],
        "scores": all_scores(study, best),
        "trial": best.number,
    }


def tune_and_confirm(spec: TuneSpec, report=print):
    """Run the trial budget (``tune``), then confirm the best trials; return the study."""
    study = tune(spec, report)
    if spec.confirm_top > 0 and counted(study) >= spec.trials:
        report(f"confirming the best {spec.confirm_top} trials on {spec.confirm_seeds} more seeds")
        confirm(spec, study, report)
    return study
