"""The study's figures: learning curves per env in small multiples, and rliable's across-env plots.

Each env's figure has one panel per norm family (grid.FAMILIES), no norm drawn in every
panel as the reference, each curve the IQM over runs with its 95% stratified-bootstrap band.
The across-env figures show rliable's aggregate metrics and performance profiles of
normalized final returns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator

from agents.plotting import pyplot
from agents.study import stats
from agents.study.grid import COLOURS, FAMILIES, REFERENCE_POINTS, reward_threshold

PANEL_WIDTH, PANEL_HEIGHT = 5.2, 3.6


def panels(variants: list[str], baseline: str = "none") -> list[tuple[str, list[str]]]:
    """(title, variants) per panel: each family present, then each variant of no family.

    A family adds a panel only for members not shown yet (the diagnosis families share
    plain BatchNorm), and none at all when more specific families show all its members,
    each beside arms of its own (the holding study's BatchNorm and joint Batch
    Renormalization, each drawn with its arms).
    """
    present = [v for v in variants if v != baseline]
    chosen = {f: [v for v in present if v in members] for f, members in FAMILIES.items()}
    out, shown = [], set()
    for family, members in chosen.items():
        if set(members) - shown and not _covered_by_others(family, chosen):
            out.append((family, members))
            shown.update(members)
    out += [(v, [v]) for v in present if not any(v in m for m in FAMILIES.values())]
    if not out and baseline in variants:
        out.append((baseline, []))
    lead = [baseline] if baseline in variants else []
    return [(title, lead + members) for title, members in out]


def _covered_by_others(family: str, chosen: dict[str, list[str]]) -> bool:
    """True when families with members outside ``family``'s together show all of its own."""
    mine = set(chosen[family])
    wider = [set(m) for f, m in chosen.items() if f != family and set(m) - mine]
    return bool(mine) and mine <= set().union(*wider)


def env_panels(env_id: str, curves: dict, variants: list[str]) -> list[tuple[str, list[str]]]:
    """``panels`` of the variants with runs on ``env_id`` (a variant run only on other envs
    of the study adds no empty panel); one empty panel if none has an evaluation yet."""
    ran = {cell.variant for cell, curve in curves.items() if cell.env_id == env_id and curve}
    return panels([v for v in variants if v in ran]) or [("no evaluations yet", [])]


def _of(cell, env_id: str, variant: str) -> bool:
    return cell.env_id == env_id and cell.variant == variant


def _curve_grid(runs: list[list[tuple[int, float]]]) -> tuple[list[int], np.ndarray]:
    steps = sorted({s for run in runs for s, _ in run})
    return steps, np.array([np.interp(steps, *zip(*run, strict=True)) for run in runs])


def plot_env(path: Path, env_id: str, curves: dict, variants: list[str], reps=None) -> None:
    """Greedy-return IQM curves of one env, one panel per norm family."""
    from rliable import plot_utils

    plt = pyplot()
    layout = env_panels(env_id, curves, variants)
    fig, axes = plt.subplots(
        1, len(layout), figsize=(PANEL_WIDTH * len(layout), PANEL_HEIGHT), squeeze=False
    )
    for ax, (title, members) in zip(axes[0], layout, strict=True):
        for variant in members:  # each curve on its own steps: runs may differ in length
            runs = [c for cell, c in curves.items() if _of(cell, env_id, variant) and c]
            if not runs:
                continue
            steps, grid = _curve_grid(runs)
            point, low, high = stats.iqm_band(grid, reps)
            label = f"{variant} (n={len(runs)})"
            plot_utils.plot_sample_efficiency_curve(
                np.asarray(steps),
                {label: point},
                {label: np.stack([low, high])},
                colors={label: COLOURS.get(variant, "#888888")},
                ax=ax,
                xlabel="environment steps",
                ylabel="greedy return (IQM)",
                labelsize="medium",
                ticklabelsize="small",
                marker="",
                linewidth=1.5,
            )
        _decorate(ax, env_id, title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _decorate(ax, env_id: str, title: str) -> None:
    threshold = reward_threshold(env_id)
    if threshold is not None:
        ax.axhline(threshold, color="black", linestyle=":", linewidth=1, label="threshold")
    if env_id in REFERENCE_POINTS:
        step, mean, spread, source = REFERENCE_POINTS[env_id]
        ax.errorbar(step, mean, yerr=spread, fmt="D", color="black", capsize=4, label=source)
    ax.set_title(f"{env_id}: {title}", fontsize="medium")
    ax.legend(fontsize=7, loc="best")


AGGREGATE_METRICS = ("Median", "IQM", "Mean", "Optimality Gap")


def plot_across_envs(path: Path, scores: dict[str, np.ndarray], reps=None) -> None:
    """rliable's interval estimates of four aggregate metrics, and performance profiles,
    of normalized final returns (``scores``: variant -> runs x envs), as two PNGs beside
    ``path``."""
    plt = pyplot()
    colours = {v: COLOURS.get(v, "#888888") for v in scores}
    fig = _aggregates_figure(scores, colours, reps)
    _save(fig, path.with_name(path.stem + "_aggregates.png"), plt)
    fig = _profiles_figure(scores, colours, reps, plt)
    _save(fig, path.with_name(path.stem + "_profiles.png"), plt)


def _aggregates_figure(scores: dict[str, np.ndarray], colours: dict[str, str], reps):
    """Median, IQM, mean and optimality gap with their stratified bootstrap intervals."""
    from rliable import metrics, plot_utils

    def aggregates(x):
        return np.array(
            [
                metrics.aggregate_median(x),
                metrics.aggregate_iqm(x),
                metrics.aggregate_mean(x),
                metrics.aggregate_optimality_gap(x),
            ]
        )

    points, intervals = stats.interval_estimates(scores, aggregates, reps, seed=0)
    fig, _ = plot_utils.plot_interval_estimates(
        points,
        intervals,
        metric_names=list(AGGREGATE_METRICS),
        algorithms=list(scores),
        colors=colours,
        xlabel="normalized final return",
        xlabel_y_coordinate=-0.3,
    )
    for ax in fig.axes:  # three ticks a panel: rliable's default crowds the panels' edges
        ax.xaxis.set_major_locator(MaxNLocator(3))
    return fig


def _profiles_figure(scores: dict[str, np.ndarray], colours: dict[str, str], reps, plt):
    """rliable's score-distribution profiles, one line and band per variant."""
    from rliable import library, plot_utils

    taus = np.linspace(-0.25, 1.25, 61)
    profiles, profile_cis = stats.interval_estimates(
        scores, lambda x: library.score_distributions(x, taus), reps, seed=1
    )
    fig, ax = plt.subplots(figsize=(7, 4.5))
    plot_utils.plot_performance_profiles(
        profiles,
        taus,
        performance_profile_cis=profile_cis,
        colors=colours,
        ax=ax,
        xlabel=r"normalized final return ($\tau$)",
        ylabel=r"fraction of runs above $\tau$",
        labelsize="medium",
        ticklabelsize="small",
    )
    labels = [f"{v} (n={len(scores[v])})" for v in profiles]  # the lines, not their bands
    ax.legend(ax.get_lines()[: len(labels)], labels, fontsize=8, loc="lower left")
    return fig


def _save(fig, path: Path, plt) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
