"""Cells asked to run again (``scripts/study.py --rerun``), e.g. after a new tuned preset.

A finished cell's run directory is moved aside (kept, never deleted) and the cell is listed
in ``rerun.json`` beside the results. Its old curve stays in runs.csv until the new run
finishes, so an interrupted rerun loses nothing, and a later run of the study (with or
without ``--rerun``, on this machine or on a clone with the committed results) goes on with
the cells still listed.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from agents.checkpoint import write_json
from agents.study.grid import Cell
from agents.study.runner import cell_dir, is_done

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
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    moved = []
    for cell in cells:
        if is_done(runs_root, cell):
            aside = runs_root / "replaced" / f"{cell.name}__{stamp}"
            aside.parent.mkdir(parents=True, exist_ok=True)
            cell_dir(runs_root, cell).rename(aside)
            moved.append(aside)
    _write(results_root, list(dict.fromkeys([*pending(results_root), *cells])))
    return moved


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
