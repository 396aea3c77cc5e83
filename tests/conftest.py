"""Suite-wide settings for in-process tests."""

import pytest

from agents.study import stats


@pytest.fixture(autouse=True)
def _few_bootstrap_resamples(monkeypatch):
    """Study intervals from 300 bootstrap resamples: the tables' meaning, at a test's speed
    (rliable resamples in Python, a few milliseconds each)."""
    monkeypatch.setattr(stats, "BOOTSTRAP_REPS", 300)
