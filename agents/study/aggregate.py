"""Turn finished study cells into a CSV of all runs, Markdown tables and learning-curve PNGs."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from agents.run_dir import path_safe
from agents.study import stats
from agents.study.grid import COLOURS, REFERENCE_POINTS, VARIANTS, Cell, reward_threshold
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


def summarize(curves: dict[Cell, list[tuple[int, float]]]) -> dict[tuple[str, str], dict]:
    """Per env and variant: final return (mean, CI, IQM), AUC and steps to threshold."""
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
            "final_ci": stats.bootstrap_ci(finals),
            "final_iqm": stats.interquartile_mean(finals),
            "best_mean": float(np.mean(bests)),
            "auc_mean": float(np.mean(aucs)),
            "auc_ci": stats.bootstrap_ci(aucs),
            "reached": sum(math.isfinite(r) for r in reach),
            "steps_median": float(np.median(reach)),
            "threshold": threshold,
            "finals": finals,
        }
    add_differences_from_baseline(table)
    return table


BASELINE = "none"  # every variant is compared with the unnormalized network of its env


def add_differences_from_baseline(table: dict[tuple[str, str], dict]) -> None:
    """Each row gains ``vs_none``: mean final return minus the baseline's, with a 95%
    bootstrap interval (None for the baseline itself or an env without one)."""
    for (env_id, variant), row in table.items():
        base = table.get((env_id, BASELINE))
        if base is None or variant == BASELINE:
            row["vs_none"] = None
            continue
        difference = row["final_mean"] - base["final_mean"]
        # One seed on either side resamples to a single value: no interval to judge by.
        enough = min(len(row["finals"]), len(base["finals"])) >= 2
        interval = stats.bootstrap_difference_ci(row["finals"], base["finals"]) if enough else None
        row["vs_none"] = (difference, interval)


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
        notes.append(f"{row['seeds']} seeds")  # a partial cell stands out
    return f"{row['final_mean']:.1f}" + (f" ({', '.join(notes)})" if notes else "")


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
        "| final - none: mean [95% CI] | IQM | AUC: mean [95% CI] | steps to threshold: median |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for variant in variants:
        row = table.get((env_id, variant))
        if row is None:
            continue
        low, high = row["final_ci"]
        auc_low, auc_high = row["auc_ci"]
        lines.append(
            f"| {variant} | {row['seeds']} | {row['final_mean']:.1f} [{low:.1f}, {high:.1f}] "
            f"| {row['best_mean']:.1f} | {_difference_text(variant, row)} | {row['final_iqm']:.1f} "
            f"| {row['auc_mean']:.1f} [{auc_low:.1f}, {auc_high:.1f}] "
            f"| {_steps_text(row)} |"
        )
    endings = [verdict(env_id, table, variants), _reference_text(env_id)]
    return "\n".join(lines) + "\n" + "".join(f"\n{text}" for text in endings if text)


def _reference_text(env_id: str) -> str:
    if env_id not in REFERENCE_POINTS:
        return ""
    step, mean, spread, source = REFERENCE_POINTS[env_id]
    return f"Reference: {source} scores about {mean:g} +- {spread:g} after {step:,} steps."


def plot_env(path: Path, env_id: str, curves: dict, variants: list[str]) -> None:
    """Mean greedy return per variant with a 95% bootstrap band, one figure per env."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.5, 4.8))
    for variant in variants:
        runs = [
            c for cell, c in curves.items() if cell.env_id == env_id and cell.variant == variant
        ]
        runs = [c for c in runs if c]
        if not runs:
            continue
        steps = sorted({s for run in runs for s, _ in run})
        grid = np.array([np.interp(steps, *zip(*run, strict=True)) for run in runs])
        mean = grid.mean(axis=0)
        bands = np.array(
            [stats.bootstrap_ci(grid[:, i], resamples=2000) for i in range(len(steps))]
        )
        colour = COLOURS.get(variant)
        ax.plot(steps, mean, label=f"{variant} (n={len(runs)})", color=colour)
        ax.fill_between(steps, bands[:, 0], bands[:, 1], color=colour, alpha=0.2)
    threshold = reward_threshold(env_id)
    if threshold is not None:
        ax.axhline(threshold, color="black", linestyle=":", linewidth=1, label="threshold")
    if env_id in REFERENCE_POINTS:
        step, mean, spread, source = REFERENCE_POINTS[env_id]
        ax.errorbar(step, mean, yerr=spread, fmt="D", color="black", capsize=4, label=source)
    ax.set(title=env_id, xlabel="environment steps", ylabel="greedy evaluation return")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the curves
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def aggregate(root: Path, out: Path, cells: list[Cell], variants: list[str]) -> dict:
    """Write runs.csv, one Markdown table and one PNG per env into ``out``."""
    curves = collect(root, cells, read_runs_csv(out / "runs.csv"))
    write_runs_csv(out / "runs.csv", curves)
    # Tables and plots come from the CSV as written (values rounded as stored), so a fresh
    # clone that has only the committed runs.csv rebuilds them byte for byte.
    curves = read_runs_csv(out / "runs.csv")
    table = summarize(curves)
    present = {cell.variant for cell in curves}
    variants = [v for v in dict.fromkeys([*variants, *VARIANTS]) if v in present]
    envs = list(dict.fromkeys(cell.env_id for cell in curves))
    sections = [markdown_table(env_id, table, variants) for env_id in envs]
    if len(envs) > 1:
        sections.insert(0, overview_table(table, envs, variants))
    (out / "tables.md").write_text("\n".join(sections))
    for env_id in envs:
        plot_env(out / f"{path_safe(env_id)}.png", env_id, curves, variants)
    return table
