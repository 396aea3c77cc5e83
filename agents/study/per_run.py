"""Each run's own numbers, read from a study's runs.csv: the final greedy return, the best
evaluation and its step, the mean of the last evaluations (less noisy than the last one)
and the area under the curve. The tables give variants' means; this is what lies under them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agents.study.aggregate import read_runs_csv
from agents.study.grid import Cell
from agents.study.stats import normalized_auc
from qnorm import QnormError

LAST_EVALUATIONS = 8  # how many of a run's last evaluations its "last eight" mean covers


@dataclass(frozen=True)
class RunNumbers:
    cell: Cell
    final: float
    best: float
    best_step: int
    last_mean: float
    auc: float
    evaluations: int


def run_numbers(cell: Cell, curve: list[tuple[int, float]]) -> RunNumbers:
    """One run's numbers from its curve of (step, mean greedy return)."""
    steps, returns = zip(*sorted(curve), strict=True)
    best = int(np.argmax(returns))  # the first evaluation that reached the maximum
    return RunNumbers(
        cell=cell,
        final=returns[-1],
        best=returns[best],
        best_step=steps[best],
        last_mean=float(np.mean(returns[-LAST_EVALUATIONS:])),
        auc=normalized_auc(steps, returns),
        evaluations=len(returns),
    )


def read_run_numbers(runs_csv: Path, grid: list[Cell]) -> list[RunNumbers]:
    """The numbers of every run of ``grid`` recorded in ``runs_csv``, in the grid's order."""
    curves = read_runs_csv(runs_csv)
    if not curves:
        raise QnormError(f"no runs recorded in {runs_csv}: run the study (or aggregate it) first")
    return [run_numbers(cell, curves[cell]) for cell in grid if cell in curves]


def markdown_table(rows: list[RunNumbers]) -> str:
    header = (
        "| env | variant | seed | final | best (step) | "
        f"last {LAST_EVALUATIONS}: mean | AUC | evaluations |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r.cell.env_id} | {r.cell.variant} | {r.cell.seed} | {r.final:.1f} | "
        f"{r.best:.1f} ({r.best_step:,}) | {r.last_mean:.1f} | {r.auc:.1f} | {r.evaluations} |"
        for r in rows
    ]
    return header + "\n".join(lines) + "\n"
