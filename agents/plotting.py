"""Learning curves read from runs' TensorBoard event files, rendered to PNG."""

from __future__ import annotations

import logging
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from qnorm import QnormError


def pyplot():
    """matplotlib's pyplot on the Agg backend (PNG files, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def load_events(run_dir: str | Path) -> EventAccumulator:
    """Every scalar point of a run directory's event files, loaded."""
    run_dir = Path(run_dir)
    if not any(run_dir.glob("events.out.tfevents.*")):
        raise QnormError(f"{run_dir} holds no TensorBoard event files")
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    # A resumed run's events restart at its snapshot's step, and TensorBoard drops the first
    # process's later events (what the run intends) with a warning about "a TensorFlow
    # restart" each time: quiet here, where it would only puzzle.
    tensorboard_log = logging.getLogger("tensorboard")
    level = tensorboard_log.level
    tensorboard_log.setLevel(logging.ERROR)
    try:
        events.Reload()
    finally:
        tensorboard_log.setLevel(level)
    return events


def read_tagged(run_dir: str | Path, prefix: str) -> dict[str, list[tuple[int, float]]]:
    """Every scalar whose tag starts with ``prefix``: tag -> (step, value) points."""
    events = load_events(run_dir)
    tags = [tag for tag in events.Tags().get("scalars", []) if tag.startswith(prefix)]
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in tags}


def read_scalars(run_dir: str | Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) points of one scalar tag from a run directory's event files."""
    events = load_events(run_dir)
    if tag not in events.Tags().get("scalars", []):
        known = ", ".join(sorted(events.Tags().get("scalars", []))) or "none"
        raise QnormError(f"{run_dir} has no scalar {tag!r}; it has: {known}")
    return [(event.step, event.value) for event in events.Scalars(tag)]


def plot_runs(run_dirs: list[str | Path], tag: str, out: str | Path, title: str = "") -> Path:
    """One line per run of ``tag`` against environment steps, saved as a PNG."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run_dir in run_dirs:
        points = read_scalars(run_dir, tag)
        ax.plot(
            *zip(*points, strict=True),
            label=Path(run_dir).name,
            marker="." if len(points) < 30 else None,
        )
    ax.set(title=title or tag, xlabel="environment steps", ylabel=tag)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
