"""Suite-wide settings for in-process tests."""

import os

import pytest

from agents.study import stats
from agents.tuning.presets import ENV_VAR

# Tests start with no tuned presets, whatever the package ships (the shipped file has a test
# of its own); scripts the tests start inherit this.
os.environ[ENV_VAR] = os.path.join(os.path.dirname(__file__), "no_tuned_presets.json")


@pytest.fixture(autouse=True)
def _few_bootstrap_resamples(monkeypatch):
    """Study intervals from 300 bootstrap resamples: the tables' meaning, at a test's speed
    (rliable resamples in Python, a few milliseconds each)."""
    monkeypatch.setattr(stats, "BOOTSTRAP_REPS", 300)
