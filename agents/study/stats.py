"""Statistics of multi-seed learning curves: bootstrap CIs, IQM, AUC, steps to threshold."""

from __future__ import annotations

import math

import numpy as np


def bootstrap_ci(
    values, confidence: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean."""
    data = np.asarray(values, dtype=float)
    if data.size == 1:
        return float(data[0]), float(data[0])
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def bootstrap_difference_ci(
    values, baseline, confidence: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(values) - mean(baseline), each group
    resampled on its own (independent runs, not pairs)."""
    a, b = np.asarray(values, dtype=float), np.asarray(baseline, dtype=float)
    rng = np.random.default_rng(seed)
    a_means = a[rng.integers(0, a.size, size=(resamples, a.size))].mean(axis=1)
    b_means = b[rng.integers(0, b.size, size=(resamples, b.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(a_means - b_means, [tail, 100.0 - tail])
    return float(low), float(high)


def interquartile_mean(values) -> float:
    """Mean of the middle half: a quarter of the runs trimmed from each end."""
    data = np.sort(np.asarray(values, dtype=float))
    cut = data.size // 4
    return float(data[cut : data.size - cut].mean())


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
