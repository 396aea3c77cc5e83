"""Statistics of multi-seed results: rliable's intervals, IQM and probability of improvement.

Every interval is a 95% percentile interval from rliable's stratified bootstrap over runs
(Agarwal et al., NeurIPS 2021), seeded so tables rebuild byte for byte; two groups (a
variant and no norm) are resampled independently, as independent runs are. AUC and steps to
threshold summarize one curve each.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from agents.extras import install_command
from qnorm import QnormError

BOOTSTRAP_REPS = 2_000  # rliable's default for performance profiles
CONFIDENCE = 0.95
Interval = tuple[float, float]


def _rliable():
    try:
        from rliable import library, metrics
    except ImportError:
        raise QnormError(f"study statistics need rliable: {install_command('stats')}") from None
    return library, metrics


def _runs(values) -> np.ndarray:
    """Values of independent runs as rliable's ``(runs, tasks)`` matrix of one task."""
    return np.asarray(values, dtype=float).reshape(-1, 1)


def resamples(reps: int | None) -> int:
    """``reps``, or the module's ``BOOTSTRAP_REPS`` when None."""
    return BOOTSTRAP_REPS if reps is None else reps


def interval_estimates(score_dict: dict, func: Callable, reps=None, seed: int = 0):
    """rliable's ``get_interval_estimates`` (95% percentile intervals), reproducibly.

    rliable draws its resampling indices from numpy's global generator whatever
    ``random_state`` says, so that generator is seeded for the call and restored after.
    """
    library, _ = _rliable()
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        return library.get_interval_estimates(
            score_dict, func, reps=resamples(reps), confidence_interval_size=CONFIDENCE
        )
    finally:
        np.random.set_state(saved)


def _interval(scores, statistic: Callable, reps, seed: int) -> tuple[float, Interval]:
    """The point estimate of ``statistic`` and its bootstrap interval (one array or a pair)."""
    points, intervals = interval_estimates(
        {"x": scores}, lambda *s: np.array([statistic(*s)]), reps, seed
    )
    low, high = intervals["x"][:, 0]
    return float(points["x"][0]), (float(low), float(high))


def mean_ci(values, reps: int | None = None, seed: int = 0) -> Interval:
    """Bootstrap interval of the mean over runs."""
    return _interval(_runs(values), _rliable()[1].aggregate_mean, reps, seed)[1]


def iqm(values) -> float:
    """Interquartile mean: the mean of the middle half of the runs (rliable's IQM)."""
    return float(_rliable()[1].aggregate_iqm(_runs(values)))


def iqm_ci(values, reps: int | None = None, seed: int = 0) -> Interval:
    """Bootstrap interval of the interquartile mean."""
    return _interval(_runs(values), _rliable()[1].aggregate_iqm, reps, seed)[1]


def difference_ci(values, baseline, reps: int | None = None, seed: int = 0) -> Interval:
    """Bootstrap interval of mean(values) - mean(baseline), the groups resampled apart."""

    def difference(x, y):
        return float(np.mean(x) - np.mean(y))

    return _interval((_runs(values), _runs(baseline)), difference, reps, seed)[1]


def probability_of_improvement(
    values, baseline, reps: int | None = None, seed: int = 0
) -> tuple[float, Interval]:
    """P(a run of ``values`` beats a run of ``baseline``), ties counted half, averaged over
    tasks, and its interval; a list of values is one task, a runs x tasks matrix several."""
    poi = _rliable()[1].probability_of_improvement
    x, y = (np.asarray(v, dtype=float) for v in (values, baseline))
    x, y = (m if m.ndim == 2 else _runs(m) for m in (x, y))
    return _interval((x, y), poi, reps, seed)


def iqm_band(curves: np.ndarray, reps: int | None = None, seed: int = 0):
    """IQM over runs at each step of ``curves`` (runs x steps) and its bootstrap band."""
    from scipy.stats import trim_mean  # rliable's IQM, over runs at every step at once

    def per_step(scores):
        return trim_mean(scores[:, 0, :], proportiontocut=0.25, axis=0)

    scores = np.asarray(curves, dtype=float)[:, None, :]
    points, intervals = interval_estimates({"x": scores}, per_step, reps, seed)
    return points["x"], intervals["x"][0], intervals["x"][1]


def aggregate_interval(
    scores: np.ndarray, metric: str, reps: int | None = None, seed: int = 0
) -> tuple[float, Interval]:
    """``iqm`` or ``mean`` of a runs x tasks matrix, with its stratified-bootstrap interval."""
    metrics = _rliable()[1]
    statistic = {"iqm": metrics.aggregate_iqm, "mean": metrics.aggregate_mean}[metric]
    return _interval(np.asarray(scores, dtype=float), statistic, reps, seed)


def normalized_auc(steps, returns) -> float:
    """Area under the learning curve divided by its step span: the curve's mean height."""
    steps, returns = np.asarray(steps, dtype=float), np.asarray(returns, dtype=float)
    if steps.size == 1:
        return float(returns[0])
    area = float(np.sum((returns[1:] + returns[:-1]) / 2.0 * np.diff(steps)))
    return area / float(steps[-1] - steps[0])


def steps_to_threshold(steps, returns, threshold: float | None) -> float:
    """The first evaluated step whose mean return reached ``threshold`` (inf if never)."""
    if threshold is None:
        return math.inf
    for step, value in zip(steps, returns, strict=True):
        if value >= threshold:
            return float(step)
    return math.inf


def held_text(finals, threshold: float) -> str:
    """How many final returns end at or above ``threshold``, as ``k/n``."""
    return f"{sum(final >= threshold for final in finals)}/{len(finals)}"
