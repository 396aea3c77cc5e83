"""Tuned presets: the best settings Optuna found per env and variant, kept as data.

``agents/tuned_presets.json`` maps env id -> variant -> {"settings", "score", "scores",
"trial", "trials", "study"}. ``scripts/tune.py --export`` writes an entry from a finished
tuning. An entry may also carry "amended" settings that a later experiment chose on tuning
seeds, with the evidence in "amended_because" (``scripts/tune.py --amend``); they apply on
top of the tuned settings and outlive a new export of settings the tuning did not search.
The environment variable QNORM_TUNED_PRESETS names another file to use instead (a
user's own tunings; the test suite points it at none, so tests do not depend on shipped data).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from agents.checkpoint import write_json
from qnorm import QnormError

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


def preset_settings(entry: dict) -> dict:
    """The settings a preset entry gives a run: the tuned ones, then its amendments."""
    return {**entry["settings"], **entry.get("amended", {})}


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
    previous = presets.get(env_id, {}).get(variant, {})
    amended = {k: v for k, v in previous.get("amended", {}).items() if k not in settings}
    if amended:  # the new tuning did not search these: the evidence for them still stands
        entry.update(amended=amended, amended_because=previous["amended_because"])
    presets.setdefault(env_id, {})[variant] = entry
    write_json(path, presets)
    return entry


def amend_preset(
    env_id: str, variant: str, settings: dict, because: str, path: Path | None = None
) -> dict:
    """Add ``settings`` to the tuned preset of ``env_id`` and ``variant``, with the evidence."""
    path = path or presets_file()
    presets = read_presets(path)
    entry = presets.get(env_id, {}).get(variant)
    if entry is None:
        raise QnormError(f"no tuned preset for {env_id} {variant} to amend; tune and export first")
    if not because.strip():
        raise QnormError("an amendment needs its evidence: say why with --because")
    amended = {**entry.get("amended", {}), **settings}
    presets[env_id][variant] = {**entry, "amended": amended, "amended_because": because}
    write_json(path, presets)
    return presets[env_id][variant]
