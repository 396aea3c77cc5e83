"""Cells asked to run again (``scripts/study.py --rerun``), e.g. after a new tuned preset.

A finished cell's run directory is moved aside (kept, never deleted) and the cell is listed
in ``rerun.json`` beside the results. Its old curve stays in runs.csv until the new run
finishes, so an interrupted rerun loses nothing, and a later run of the study (with or
without ``--rerun``, on this machine or on a clone with the committed results) goes on with
the cells still listed.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from agents.checkpoint import write_json
from agents.study.grid import Cell
from agents.study.runner import is_done, set_aside

PENDING_FILE = "rerun.json"


def pending(results_root: Path) -> list[Cell]:
    """The cells asked to run again whose new run has not finished yet."""
    path = results_root / PENDING_FILE
    if not path.is_file():
        return []
    return [Cell(**fields) for fields in json.loads(path.read_text())["cells"]]


def ask(runs_root: Path, results_root: Path, cells: list[Cell]) -> list[Path]:
    """List ``cells`` to run again and move their finished run directories aside.

    Returns where the old run directories went. A cell whose new run is under way (its run
    directory unfinished) keeps it and resumes.
    """
    moved = [set_aside(runs_root, c) for c in cells if is_done(runs_root, c)]
    _write(results_root, list(dict.fromkeys([*pending(results_root), *cells])))
    return moved


def still_pending(runs_root: Path, results_root: Path) -> frozenset[Cell]:
    """The listed cells whose new run has not finished; any that has is struck off (a
    listed cell's old run was set aside, so a finished run directory is its new one)."""
    for cell in pending(results_root):
        if is_done(runs_root, cell):
            finished(results_root, cell)
    return frozenset(pending(results_root))


def finished(results_root: Path, cell: Cell) -> None:
    """Strike ``cell`` off the list once its new run has finished."""
    left = [c for c in pending(results_root) if c != cell]
    if left:
        _write(results_root, left)
    else:
        (results_root / PENDING_FILE).unlink(missing_ok=True)


def _write(results_root: Path, cells: list[Cell]) -> None:
    results_root.mkdir(parents=True, exist_ok=True)
    write_json(results_root / PENDING_FILE, {"cells": [asdict(c) for c in cells]})
