"""The pixel benchmark: CNN latencies per norm, and MinAtar training speed beside the reference."""

from __future__ import annotations

from collections.abc import Callable
from statistics import median

from agents.bench import minatar_speed, pixel_latency
from agents.bench.pixel_latency import FOLDED_SUFFIX, Budget, PixelCase
from agents.bench.suite import run_job
from agents.presets import preset_for

Print = Callable[[str], None]
MINATAR_AIM = 5.0  # the aim for qnorm's MinAtar training speed over the reference
BATCH_SIZES = (1, 32)
ACT = "act one state (DQNAgent.act, eps 0)"
UPDATE = "update step"


def latencies(budget: Budget, out: Print) -> None:
    """Act, update and eval-forward latencies of each CNN, every norm variant beside none."""
    out(
        f"CNN latencies: medians of {budget.repeats} interleaved repeats (~{budget.seconds:g} s "
        "each); (x) is the ratio to none, timed side by side"
    )
    for case in pixel_latency.PIXEL_CASES:
        agents = pixel_latency.make_agents(case)
        config = agents["none"].config
        out(
            f"{case.net} net on {case.env_id} obs {case.obs_shape} {case.obs_dtype}; acting: "
            f"{pixel_latency.acting_path(agents['none'])}; update: {config.optimizer}, "
            f"batch {config.batch_size}"
        )
        rows = {ACT: pixel_latency.act_latencies(case, agents, budget)}
        for batch in BATCH_SIZES:
            forward = pixel_latency.eval_forward_latencies(case, agents, batch, budget)
            rows[_forward_label(batch)] = forward
        # Last: updates move the weights and running statistics the other rows use.
        rows[UPDATE] = pixel_latency.update_latencies(case, agents, budget)
        for label in (ACT, UPDATE, *map(_forward_label, BATCH_SIZES)):
            out(f"  {label:36s} {_cells(rows[label])}")
        _print_overheads(case, rows, out)


def _forward_label(batch: int) -> str:
    return f"eval forward batch {batch:2d}"


def _cells(row: dict[str, float]) -> str:
    """``name time (ratio to none)`` for each variant of one measurement."""
    return " | ".join(
        f"{name} {us:.0f} us" + ("" if name == "none" else f" ({us / row['none']:.2f}x)")
        for name, us in row.items()
    )


def _print_overheads(case: PixelCase, rows: dict[str, dict[str, float]], out: Print) -> None:
    """BatchNorm's cost over none for training and acting, and what folding leaves of it."""
    act, update, one = rows[ACT], rows[UPDATE], rows[_forward_label(1)]
    for variant in pixel_latency.NORM_VARIANTS:
        if variant == "none":
            continue
        folded = one.get(variant + FOLDED_SUFFIX)
        folded_text = "" if folded is None else f", folded {folded / one['none'] - 1:+.0%}"
        out(
            f"  {case.net} {variant} over none: training (update) "
            f"{update[variant] / update['none'] - 1:+.0%}, acting (act) "
            f"{act[variant] / act['none'] - 1:+.0%}, eval forward of one state "
            f"{one[variant] / one['none'] - 1:+.0%}{folded_text}"
        )


def check_reference(path: str) -> None:
    """Raise QnormError unless ``path`` is an importable copy of MinAtar's examples/dqn.py."""
    minatar_speed.load_reference(path)


def minatar_comparison(reference: str, steps: int, repeats: int, threads: int, out: Print):
    """qnorm and the reference DQN on MinAtar Breakout, alternating fresh processes."""
    check_reference(reference)  # a bad path fails here, before any run
    out(
        f"MinAtar Breakout training speed beside MinAtar's examples/dqn.py: {steps} steps each "
        f"(the first {_learning_starts()} random), {threads} torch thread(s), a fresh process "
        "per run"
    )
    pairs = []
    for repeat in range(repeats):
        job = {"kind": "minatar", "steps": steps, "seed": repeat, "threads": threads}
        ours = run_job({**job, "library": "qnorm"})
        theirs = run_job({**job, "library": "reference", "reference": reference})
        pairs.append((ours, theirs))
        out(
            f"  repeat {repeat + 1}/{repeats}: qnorm {_sps(ours)}  reference {_sps(theirs)}  "
            f"ratio {ours['sps'] / theirs['sps']:.2f} (learning {_ratio(ours, theirs)})"
        )
    summary = {
        "qnorm_sps": median(o["sps"] for o, _ in pairs),
        "reference_sps": median(t["sps"] for _, t in pairs),
        "ratio": median(o["sps"] / t["sps"] for o, t in pairs),
    }
    learning = [o["learning_sps"] / t["learning_sps"] for o, t in pairs if _both_learned(o, t)]
    summary["learning_ratio"] = median(learning) if learning else None
    _print_minatar_summary(summary, repeats, out)
    return summary


def _learning_starts() -> int:
    return int(preset_for(minatar_speed.ENV_ID)["dqn.learning_starts"])


def _sps(timing: dict) -> str:
    learning = timing["learning_sps"]
    after = "-" if learning is None else f"{learning:.0f}"
    return f"{timing['sps']:6.0f} SPS ({after} after learning starts)"


def _both_learned(ours: dict, theirs: dict) -> bool:
    return ours["learning_sps"] is not None and theirs["learning_sps"] is not None


def _ratio(ours: dict, theirs: dict) -> str:
    if not _both_learned(ours, theirs):
        return "-"
    return f"{ours['learning_sps'] / theirs['learning_sps']:.2f}"


def _print_minatar_summary(summary: dict, repeats: int, out: Print) -> None:
    """The median ratio of the pairs, against the issue's aim."""
    verdict = "meets" if summary["ratio"] >= MINATAR_AIM else "below"
    learning = summary["learning_ratio"]
    learning_text = "-" if learning is None else f"{learning:.2f}x"
    out(
        f"minatar ratio qnorm/reference (median of {repeats} pairs): {summary['ratio']:.2f}x "
        f"overall ({summary['qnorm_sps']:.0f} vs {summary['reference_sps']:.0f} SPS), "
        f"{learning_text} after learning starts; {verdict} the {MINATAR_AIM:.0f}x aim"
    )
