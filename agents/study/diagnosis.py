"""The diagnosis of BatchNorm's lost policies: per arm, does the final policy hold, and what
do the norm diagnostics (greedy agreement, weight norms) say while it falls?

The runs' ``norm/*`` TensorBoard scalars are copied into ``norm_diagnostics.csv`` beside
runs.csv, so ``diagnosis.md`` rebuilds from committed results on a machine without the run
directories, like the study's tables.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

from agents.plotting import read_tagged
from agents.study import stats
from agents.study.aggregate import MIN_SEEDS_FOR_INTERVAL
from agents.study.grid import SCORE_RANGES, Cell, reward_threshold
from agents.study.runner import cell_dir, is_done, read_norm

REFERENCE = "batchnorm"  # every arm changes one setting of this variant
AGREEMENT = "norm/greedy_agreement"
FIRST_WEIGHT = "norm/weight_norm/layers.linear1"  # the weight before the first norm
# An evaluation is judged once the run has reached half of the env's score range: it has
# "collapsed" below half of its best so far, and "held" at 90% of it or more.
REACHED, COLLAPSED, HELD = 0.5, 0.5, 0.9

Series = dict[str, list[tuple[int, float]]]  # tag -> (step, value) points


def collect(root: Path, cells: list[Cell], earlier: dict[Cell, Series]) -> dict[Cell, Series]:
    """Each finished cell's norm scalars: as its task returned them, else from its event
    files (a run directory on this disk), else from ``earlier`` (the recorded CSV)."""
    series = dict(earlier)
    for cell in cells:
        if is_done(root, cell):
            returned = read_norm(root, cell)
            series[cell] = (
                returned if returned is not None else read_tagged(cell_dir(root, cell), "norm/")
            )
    return series


def write_csv(path: Path, series: dict[Cell, Series]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["env_id", "variant", "seed", "tag", "step", "value"])
        for cell, tags in series.items():
            for tag, points in sorted(tags.items()):
                for step, value in points:
                    writer.writerow(
                        [cell.env_id, cell.variant, cell.seed, tag, step, f"{value:.6g}"]
                    )


def read_csv(path: Path) -> dict[Cell, Series]:
    series: dict[Cell, Series] = defaultdict(lambda: defaultdict(list))
    if path.is_file():
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                cell = Cell(row["env_id"], row["variant"], int(row["seed"]))
                series[cell][row["tag"]].append((int(row["step"]), float(row["value"])))
    return {cell: dict(tags) for cell, tags in series.items()}


def value_at(points: list[tuple[int, float]], step: int) -> float | None:
    """The last point logged at or before ``step``."""
    before = [value for at, value in points if at <= step]
    return before[-1] if before else None


def judged_evaluations(curve, env_id: str) -> list[tuple[int, float, str]]:
    """(step, return, "collapsed" | "held" | "between") for each evaluation after the run
    first reached half of the env's score range."""
    low, high = SCORE_RANGES[env_id]
    best, judged = None, []
    for step, value in curve:
        if best is not None and (best - low) / (high - low) >= REACHED:
            fraction = (value - low) / (best - low)
            kind = (
                "collapsed" if fraction < COLLAPSED else "held" if fraction >= HELD else "between"
            )
            judged.append((step, value, kind))
        best = value if best is None else max(best, value)
    return judged


def agreement_by_outcome(curves: dict, series: dict[Cell, Series]) -> dict[str, list[float]]:
    """Greedy agreement (train vs eval mode) at collapsed and held evaluations, pooled."""
    pooled: dict[str, list[float]] = defaultdict(list)
    for cell, curve in curves.items():
        points = series.get(cell, {}).get(AGREEMENT)
        if not points or cell.env_id not in SCORE_RANGES:
            continue
        for step, _, kind in judged_evaluations(curve, cell.env_id):
            agreement = value_at(points, step)
            if agreement is not None:
                pooled[kind].append(agreement)
    return pooled


def arm_row(env_id: str, variant: str, curves: dict, series: dict, reps) -> str:
    runs = {c: curve for c, curve in curves.items() if (c.env_id, c.variant) == (env_id, variant)}
    finals = [curve[-1][1] for curve in runs.values()]
    drops = [max(v for _, v in curve) - curve[-1][1] for curve in runs.values()]
    low, high = stats.mean_ci(finals, reps)
    threshold = reward_threshold(env_id)
    solved = "n/a"
    if threshold is not None:
        solved = stats.held_text(finals, threshold)
    reference = [
        curve[-1][1] for c, curve in curves.items() if (c.env_id, c.variant) == (env_id, REFERENCE)
    ]
    if variant == REFERENCE or min(len(reference), len(finals)) < MIN_SEEDS_FOR_INTERVAL:
        versus = "reference" if variant == REFERENCE else "n/a"
    else:
        d_low, d_high = stats.difference_ci(finals, reference, reps)
        difference = sum(finals) / len(finals) - sum(reference) / len(reference)
        versus = f"{difference:+.1f} [{d_low:+.1f}, {d_high:+.1f}]"
    late = [late_mean(series.get(c, {}).get(AGREEMENT), curve) for c, curve in runs.items()]
    growth = [weight_growth(series.get(c, {}).get(FIRST_WEIGHT)) for c in runs]
    return (
        f"| {variant} | {len(finals)} | {sum(finals) / len(finals):.1f} [{low:.1f}, {high:.1f}] "
        f"| {versus} | {solved} | {sum(drops) / len(drops):.1f} "
        f"| {mean_text(late, '{:.3f}')} | {mean_text(growth, '{:.2f}x')} |"
    )


def late_mean(points, curve) -> float | None:
    """Mean of ``points`` over the last quarter of the run's evaluated steps."""
    if not points:
        return None
    end = curve[-1][0]
    late = [value for step, value in points if step > 0.75 * end]
    return sum(late) / len(late) if late else None


def weight_growth(points) -> float | None:
    """Last over first logged weight norm."""
    return points[-1][1] / points[0][1] if points else None


def mean_text(values: list, form: str) -> str:
    present = [v for v in values if v is not None]
    return form.format(sum(present) / len(present)) if present else "n/a"


def diagnosis_markdown(curves: dict, series: dict, variants: list[str], reps=None) -> str:
    """Per env, one row per arm; then greedy agreement at collapsed vs held evaluations."""
    sections = []
    for env_id in dict.fromkeys(c.env_id for c in curves):
        present = [
            v for v in variants if any(c.variant == v and c.env_id == env_id for c in curves)
        ]
        sections += [
            f"### {env_id}: does the final policy hold?\n",
            f"| arm | seeds | final greedy return: mean [95% CI] | final - {REFERENCE} "
            "[95% CI] | final >= threshold | best - final: mean | greedy agreement, last "
            "quarter: mean | first weight norm, end / start: mean |",
            "|---|---|---|---|---|---|---|---|",
            *(arm_row(env_id, v, curves, series, reps) for v in present),
            "",
        ]
        on_env = {c: curve for c, curve in curves.items() if c.env_id == env_id}
        pooled = agreement_by_outcome(on_env, series)
        if pooled:
            parts = [
                f"{kind} {len(pooled[kind])} evaluations: {mean_text(pooled[kind], '{:.3f}')}"
                for kind in ("collapsed", "held", "between")
                if pooled[kind]
            ]
            sections.append(
                f"Greedy agreement at evaluations after a run reached half the score range "
                f"(every run that logs it, pooled): {'; '.join(parts)}.\n"
            )
    return "\n".join(sections)


def write_diagnosis(root: Path, out: Path, cells: list[Cell], variants, curves, reps) -> None:
    """norm_diagnostics.csv (merged with the recorded one) and diagnosis.md into ``out``."""
    path = out / "norm_diagnostics.csv"
    series = collect(root, cells, read_csv(path))
    write_csv(path, series)
    series = read_csv(path)  # as written, so a fresh clone rebuilds the same text
    grid = {c: curve for c, curve in curves.items() if c in set(cells)}
    (out / "diagnosis.md").write_text(diagnosis_markdown(grid, series, variants, reps))
