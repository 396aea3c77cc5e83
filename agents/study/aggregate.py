"""Turn finished study cells into a CSV of all runs, Markdown tables and learning-curve PNGs."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from agents.run_dir import path_safe
from agents.study import figures, stats
from agents.study.grid import REFERENCE_POINTS, SCORE_RANGES, VARIANTS, Cell, reward_threshold
from agents.study.runner import is_done, read_curve


def collect(root: Path, cells: list[Cell], earlier: dict | None = None) -> dict:
    """The evaluation curves of every finished cell: from its run directory, else from
    ``earlier`` results (a committed runs.csv), so a study resumes on a fresh machine."""
    curves = dict(earlier or {})  # recorded cells outside this grid are kept, never dropped
    for cell in cells:
        if is_done(root, cell):
            curves[cell] = read_curve(root, cell)
    return curves


def read_runs_csv(path: Path) -> dict[Cell, list[tuple[int, float]]]:
    """The curves recorded in a runs.csv written by ``write_runs_csv`` (empty if none)."""
    if not path.is_file():
        return {}
    curves: dict[Cell, list[tuple[int, float]]] = defaultdict(list)
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            cell = Cell(row["env_id"], row["variant"], int(row["seed"]))
            curves[cell].append((int(row["step"]), float(row["mean_return"])))
    return dict(curves)


def write_runs_csv(path: Path, curves: dict[Cell, list[tuple[int, float]]]) -> None:
    """One row per evaluation of every run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["env_id", "variant", "seed", "step", "mean_return"])
        for cell, curve in curves.items():
            for step, value in curve:
                writer.writerow([cell.env_id, cell.variant, cell.seed, step, f"{value:.4f}"])


def summarize(
    curves: dict[Cell, list[tuple[int, float]]], reps: int | None = None
) -> dict[tuple[str, str], dict]:
    """Per env and variant: final return (mean, IQM, intervals), AUC and steps to threshold."""
    grouped: dict[tuple[str, str], list[list[tuple[int, float]]]] = defaultdict(list)
    for cell, curve in curves.items():
        if curve:
            grouped[cell.env_id, cell.variant].append(curve)
    table = {}
    for (env_id, variant), runs in grouped.items():
        threshold = reward_threshold(env_id)
        finals = [curve[-1][1] for curve in runs]
        bests = [max(value for _, value in curve) for curve in runs]  # the best checkpoint's
        aucs = [stats.normalized_auc(*zip(*curve, strict=True)) for curve in runs]
        reach = [stats.steps_to_threshold(*zip(*c, strict=True), threshold) for c in runs]
        table[env_id, variant] = {
            "seeds": len(runs),
            "final_mean": float(np.mean(finals)),
            "final_ci": stats.mean_ci(finals, reps),
            "final_iqm": stats.iqm(finals),
            "iqm_ci": stats.iqm_ci(finals, reps),
            "best_mean": float(np.mean(bests)),
            "auc_mean": float(np.mean(aucs)),
            "auc_ci": stats.mean_ci(aucs, reps),
            "reached": sum(math.isfinite(r) for r in reach),
            "steps_median": float(np.median(reach)),
            "threshold": threshold,
            "finals": finals,
        }
    add_differences_from_baseline(table, reps)
    return table


BASELINE = "none"  # every variant is compared with the unnormalized network of its env


# A bootstrap over one seed resamples to a single value, over two to three values that never
# leave the two seeds' range: a "95%" interval from so few says nothing, so no verdict.
MIN_SEEDS_FOR_INTERVAL = 3


def add_differences_from_baseline(table: dict[tuple[str, str], dict], reps=None) -> None:
    """Each row gains ``vs_none`` (mean final return minus the baseline's, with its 95%
    interval) and ``poi`` (probability of improvement over the baseline, with its interval);
    None for the baseline itself or an env without one, intervals None below
    MIN_SEEDS_FOR_INTERVAL seeds on either side."""
    for (env_id, variant), row in table.items():
        base = table.get((env_id, BASELINE))
        if base is None or variant == BASELINE:
            row["vs_none"] = row["poi"] = None
            continue
        difference = row["final_mean"] - base["final_mean"]
        if min(len(row["finals"]), len(base["finals"])) < MIN_SEEDS_FOR_INTERVAL:
            row["vs_none"], row["poi"] = (difference, None), None
            continue
        row["vs_none"] = (difference, stats.difference_ci(row["finals"], base["finals"], reps))
        row["poi"] = stats.probability_of_improvement(row["finals"], base["finals"], reps)


def _difference_text(variant: str, row: dict) -> str:
    if row.get("vs_none") is None:
        return "baseline" if variant == BASELINE else "n/a"
    difference, interval = row["vs_none"]
    if interval is None:
        return f"{difference:+.1f} (too few seeds for an interval)"
    low, high = interval
    return f"{difference:+.1f} [{low:+.1f}, {high:+.1f}]"


def verdict(env_id: str, table: dict, variants: list[str]) -> str:
    """One sentence per env: which variants beat or lost to no norm beyond the noise."""
    rows = {v: table[env_id, v] for v in variants if (env_id, v) in table}
    outcome = {v: _comparison(r) for v, r in rows.items() if r.get("vs_none") is not None}
    if not outcome:
        return ""
    best = max(rows, key=lambda v: rows[v]["final_mean"])

    def names(kind: str) -> str:
        return ", ".join(v for v in outcome if outcome[v] == kind) or "no variant"

    untested = (
        f" Too few seeds to tell: {names('untested')}." if "untested" in outcome.values() else ""
    )
    return (
        f"Highest mean final return: {best}. Against no norm (95% interval of the "
        f"difference excludes 0): better: {names('better')}; worse: {names('worse')}; "
        f"not distinguishable: {names('tie')}.{untested}\n"
    )


def holding_text(env_id: str, table: dict, variants: list[str]) -> str:
    """Per variant, how many seeds' final policies end at or above the env's threshold."""
    threshold = reward_threshold(env_id)
    rows = [(v, table[env_id, v]) for v in variants if (env_id, v) in table]
    if threshold is None or not rows:
        return ""
    counts = ", ".join(f"{v} {stats.held_text(row['finals'], threshold)}" for v, row in rows)
    return f"Final policies at or above {threshold:g}: {counts}.\n"


def _comparison(row: dict) -> str:
    """better / worse / tie against no norm, by the 95% interval of the difference."""
    _, interval = row["vs_none"]
    if interval is None:
        return "untested"
    low, high = interval
    return "better" if low > 0 else "worse" if high < 0 else "tie"


def overview_table(table: dict, envs: list[str], variants: list[str]) -> str:
    """Variants x envs: mean final return, and how it compares with no norm on that env."""
    lines = [
        "### All envs: mean final greedy return (better / worse / tie against no norm)",
        "",
        "| variant | " + " | ".join(envs) + " |",
        "|---|" + "---|" * len(envs),
    ]
    most_seeds = {env_id: 0 for env_id in envs}
    for (env_id, _), row in table.items():
        most_seeds[env_id] = max(most_seeds.get(env_id, 0), row["seeds"])
    for variant in variants:
        if any((env_id, variant) in table for env_id in envs):  # else run on no env
            cells = [_overview_cell(table.get((e, variant)), most_seeds[e]) for e in envs]
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _overview_cell(row: dict | None, most_seeds: int) -> str:
    """Mean final return, its comparison with no norm, and the seeds if fewer than the rest."""
    if row is None:
        return "not run"
    notes = [] if row.get("vs_none") is None else [_comparison(row)]
    if row["seeds"] < most_seeds:
        seeds = row["seeds"]
        notes.append(f"{seeds} seed{'s' * (seeds != 1)}")  # a partial cell stands out
    return f"{row['final_mean']:.1f}" + (f" ({', '.join(notes)})" if notes else "")


def _poi_text(variant: str, row: dict) -> str:
    if row.get("poi") is None:
        return "baseline" if variant == BASELINE else "n/a"
    point, (low, high) = row["poi"]
    return f"{point:.2f} [{low:.2f}, {high:.2f}]"


def _steps_text(row: dict) -> str:
    if row["threshold"] is None:
        return "n/a"
    median = "never" if math.isinf(row["steps_median"]) else f"{row['steps_median']:,.0f}"
    return f"{median} ({row['reached']}/{row['seeds']} reached)"


def markdown_table(env_id: str, table: dict, variants: list[str]) -> str:
    """The Markdown table of one env, variants in the given order."""
    threshold = reward_threshold(env_id)
    solved = "no registered threshold" if threshold is None else f"threshold {threshold}"
    lines = [
        f"### {env_id} ({solved})",
        "",
        "| variant | seeds | final greedy return: mean [95% CI] | best checkpoint: mean "
        "| final - none: mean [95% CI] | P(better than none) [95% CI] | IQM [95% CI] "
        "| AUC: mean [95% CI] | steps to threshold: median |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for variant in variants:
        row = table.get((env_id, variant))
        if row is None:
            continue
        low, high = row["final_ci"]
        iqm_low, iqm_high = row["iqm_ci"]
        auc_low, auc_high = row["auc_ci"]
        lines.append(
            f"| {variant} | {row['seeds']} | {row['final_mean']:.1f} [{low:.1f}, {high:.1f}] "
            f"| {row['best_mean']:.1f} | {_difference_text(variant, row)} "
            f"| {_poi_text(variant, row)} "
            f"| {row['final_iqm']:.1f} [{iqm_low:.1f}, {iqm_high:.1f}] "
            f"| {row['auc_mean']:.1f} [{auc_low:.1f}, {auc_high:.1f}] "
            f"| {_steps_text(row)} |"
        )
    endings = [
        verdict(env_id, table, variants),
        holding_text(env_id, table, variants),
        _reference_text(env_id),
    ]
    return "\n".join(lines) + "\n" + "".join(f"\n{text}" for text in endings if text)


def _reference_text(env_id: str) -> str:
    if env_id not in REFERENCE_POINTS:
        return ""
    step, mean, spread, source = REFERENCE_POINTS[env_id]
    return f"Reference: {source} scores about {mean:g} +- {spread:g} after {step:,} steps."


def normalized_finals(curves: dict, variants: list[str]) -> dict[str, np.ndarray]:
    """Final returns normalized by each env's score range, as rliable's runs x envs matrix
    per variant: the envs with a range that every listed variant ran, the seeds all share."""
    envs = [e for e in dict.fromkeys(c.env_id for c in curves) if e in SCORE_RANGES]
    ran = {v: {c.env_id for c in curves if c.variant == v and curves[c]} for v in variants}
    envs = [e for e in envs if all(e in ran[v] for v in variants if ran[v])]
    if len(envs) < 2:
        return {}
    scores = {}
    for variant in (v for v in variants if ran[v]):
        seed_sets = [
            {c.seed for c in curves if (c.env_id, c.variant) == (e, variant) and curves[c]}
            for e in envs
        ]
        seeds = sorted(set.intersection(*seed_sets))
        if not seeds:
            continue
        rows = []
        for seed in seeds:
            row = []
            for env_id in envs:
                low, high = SCORE_RANGES[env_id]
                final = curves[Cell(env_id, variant, seed)][-1][1]
                row.append((final - low) / (high - low))
            rows.append(row)
        scores[variant] = np.array(rows)
    return scores


def across_envs_table(scores: dict[str, np.ndarray], reps=None) -> str:
    """IQM, mean and probability of improvement over no norm of normalized final returns."""
    if not scores:
        return ""
    lines = [
        "### Across envs: normalized final return (0 = random policy, 1 = the env's threshold)",
        "",
        "| variant | runs x envs | IQM [95% CI] | mean [95% CI] | P(better than none) [95% CI] |",
        "|---|---|---|---|---|",
    ]
    base = scores.get(BASELINE)
    for variant, matrix in scores.items():
        iqm, (iqm_low, iqm_high) = stats.aggregate_interval(matrix, "iqm", reps)
        mean, (low, high) = stats.aggregate_interval(matrix, "mean", reps)
        poi = "baseline" if variant == BASELINE else "n/a"
        if base is not None and variant != BASELINE and min(len(matrix), len(base)) >= 2:
            point, (p_low, p_high) = stats.probability_of_improvement(matrix, base, reps)
            poi = f"{point:.2f} [{p_low:.2f}, {p_high:.2f}]"
        runs, envs = matrix.shape
        lines.append(
            f"| {variant} | {runs} x {envs} | {iqm:.2f} [{iqm_low:.2f}, {iqm_high:.2f}] "
            f"| {mean:.2f} [{low:.2f}, {high:.2f}] | {poi} |"
        )
    return "\n".join(lines) + "\n"


def aggregate(
    root: Path,
    out: Path,
    cells: list[Cell],
    variants: list[str],
    reps: int | None = None,
) -> dict:
    """Write runs.csv, the Markdown tables, one PNG per env and the across-env PNGs into
    ``out``; ``reps`` bootstrap resamples for every interval (None: stats.BOOTSTRAP_REPS)."""
    curves = collect(root, cells, read_runs_csv(out / "runs.csv"))
    write_runs_csv(out / "runs.csv", curves)
    # Tables and plots come from the CSV as written (values rounded as stored), so a fresh
    # clone that has only the committed runs.csv rebuilds them byte for byte.
    curves = read_runs_csv(out / "runs.csv")
    table = summarize(curves, reps)
    present = {cell.variant for cell in curves}
    variants = [v for v in dict.fromkeys([*variants, *VARIANTS]) if v in present]
    envs = list(dict.fromkeys(cell.env_id for cell in curves))
    sections = [markdown_table(env_id, table, variants) for env_id in envs]
    scores = normalized_finals(curves, variants)
    if len(envs) > 1:
        sections.insert(0, overview_table(table, envs, variants))
        if scores:
            sections.insert(1, across_envs_table(scores, reps))
    (out / "tables.md").write_text("\n".join(sections))
    for env_id in envs:
        figures.plot_env(out / f"{path_safe(env_id)}.png", env_id, curves, variants, reps)
    if scores:
        figures.plot_across_envs(out / "across_envs.png", scores, reps)
    return table
