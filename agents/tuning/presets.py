"""Tuned presets: the best settings Optuna found per env and variant, kept as data.

``agents/tuned_presets.json`` maps env id -> variant -> {"settings", "score", "scores",
"trial", "trials", "study"}. ``scripts/tune.py --export`` writes an entry from a finished
tuning. The environment variable QNORM_TUNED_PRESETS names another file to use instead (a
user's own tunings; the test suite points it at none, so tests do not depend on shipped data).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from agents.checkpoint import write_json

PRESETS_FILE = Path(__file__).resolve().parent.parent / "tuned_presets.json"
ENV_VAR = "QNORM_TUNED_PRESETS"


def presets_file() -> Path:
    """The tuned presets in use: $QNORM_TUNED_PRESETS if set, else the shipped file."""
    return Path(os.environ.get(ENV_VAR) or PRESETS_FILE)


def read_presets(path: Path | None = None) -> dict:
    """Every tuned preset (empty when none has been exported yet)."""
    path = path or presets_file()
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def export_best(
    env_id: str, variant: str, best: dict, trials: int, study: str, path: Path | None = None
) -> dict:
    """Write ``best`` (from ``best_settings``) as the tuned preset of ``env_id`` and ``variant``."""
    path = path or presets_file()
    presets = read_presets(path)
    settings = {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in best["settings"].items()
    }
    entry = {**best, "settings": settings, "trials": trials, "study": study}
    presets.setdefault(env_id, {})[variant] = entry
    write_json(path, presets)
    return entry
