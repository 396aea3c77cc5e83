"""Tuned presets: the best settings Optuna found per env and variant, kept as data.

``agents/tuned_presets.json`` maps env id -> variant -> {"settings", "score", "trial",
"trials", "study"}. ``scripts/tune.py --export`` writes an entry from a finished tuning.
"""

from __future__ import annotations

import json
from pathlib import Path

from agents.checkpoint import write_json

PRESETS_FILE = Path(__file__).resolve().parent.parent / "tuned_presets.json"


def read_presets(path: Path | None = None) -> dict:
    """Every tuned preset (empty when none has been exported yet)."""
    path = path or PRESETS_FILE
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def export_best(
    env_id: str, variant: str, best: dict, trials: int, study: str, path: Path = PRESETS_FILE
) -> dict:
    """Write ``best`` (from ``best_settings``) as the tuned preset of ``env_id`` and ``variant``."""
    presets = read_presets(path)
    settings = {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in best["settings"].items()
    }
    entry = {**best, "settings": settings, "trials": trials, "study": study}
    presets.setdefault(env_id, {})[variant] = entry
    write_json(path or PRESETS_FILE, presets)
    return entry
