"""The benchmark suite: alternating qnorm/SB3 runs, pairwise ratios, latencies, time to solve."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from statistics import median

from agents.bench import latency
from agents.bench.configs import CONFIGS, BenchConfig
from qnorm import QnormError

Print = Callable[[str], None]
RATIO_TARGET = 2.0


def run_job(job: dict) -> dict:
    """Run one job in a fresh Python process and return its JSON result."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "agents.bench.worker", json.dumps(job)],
        capture_output=True,
        text=True,
        env=env,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise QnormError(f"benchmark job {job['library']} {job.get('norm', '')} failed: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def speed(
    configs: list[BenchConfig], norms: list[str], repeats: int, threads: int, out: Print
) -> dict:
    """SPS of qnorm and SB3, run A B A B ... per config and norm; returns the medians."""
    summary = {}
    for bench in configs:
        for norm in norms:
            pairs = []
            for repeat in range(repeats):
                job = {"kind": "speed", "config": bench.to_dict(), "norm": norm}
                job.update(seed=repeat, threads=threads)
                ours = run_job({**job, "library": "qnorm"})["sps"]
                theirs = run_job({**job, "library": "sb3"})["sps"]
                pairs.append((ours, theirs))
                out(
                    f"  {bench.name:8s} {norm:10s} repeat {repeat + 1}/{repeats}: "
                    f"qnorm {ours:7.0f} SPS  sb3 {theirs:7.0f} SPS  ratio {ours / theirs:.2f}"
                )
            summary[bench.name, norm] = {
                "qnorm_sps": median(p[0] for p in pairs),
                "sb3_sps": median(p[1] for p in pairs),
                "ratio": median(p[0] / p[1] for p in pairs),
            }
    return summary


def print_speed_summary(summary: dict, out: Print) -> None:
    """One ratio line per config and norm, then BatchNorm's overhead over no norm."""
    out("config   norm       qnorm SPS (median)  sb3 SPS (median)  qnorm/sb3 (median of pairs)")
    for (config, norm), row in summary.items():
        verdict = "meets" if row["ratio"] >= RATIO_TARGET else "below"
        out(
            f"ratio {config:8s} {norm:10s} {row['qnorm_sps']:9.0f} {row['sb3_sps']:17.0f} "
            f"{row['ratio']:14.2f}   ({verdict} the {RATIO_TARGET:.0f}x target)"
        )
    for config in dict.fromkeys(c for c, _ in summary):
        if (config, "none") in summary and (config, "batchnorm") in summary:
            none = summary[config, "none"]["qnorm_sps"]
            bn = summary[config, "batchnorm"]["qnorm_sps"]
            out(f"batchnorm training overhead over none ({config}): {none / bn - 1:+.1%}")


def latencies(norms: list[str], out: Print) -> None:
    """Act, update and eval-forward latencies in microseconds (medians)."""
    for norm in norms:
        acting = latency.act_latency(norm, (256, 256))
        update = latency.update_latency(norm, (256, 256), 64)
        out(
            f"latency {norm:10s} act one state: torch {acting['torch']:6.1f} us, "
            f"numpy mirror {acting['numpy']:5.1f} us; update step (256x256, batch 64): "
            f"{update:7.1f} us"
        )
    for batch in (1, 64):
        forward = latency.eval_forward_latency((256, 256), batch)
        ratio = forward["batchnorm_folded"] / forward["none"]
        out(
            f"eval forward batch {batch:2d}: none {forward['none']:6.1f} us, batchnorm "
            f"{forward['batchnorm']:6.1f} us, folded {forward['batchnorm_folded']:6.1f} us "
            f"(folded/none {ratio:.2f})"
        )


def solve(seeds: int, threads: int, out: Print) -> dict[str, float]:
    """Median seconds to a greedy mean >= 475 on CartPole-v1, alternating the libraries."""
    times: dict[str, list[float]] = {"qnorm": [], "sb3": []}
    for seed in range(seeds):
        for library in ("qnorm", "sb3"):
            result = run_job(
                {"kind": "solve", "library": library, "seed": seed, "threads": threads}
            )
            solved = result["steps"] is not None
            times[library].append(result["seconds"] if solved else float("inf"))
            where = f"at step {result['steps']}" if solved else "not solved"
            out(f"  solve seed {seed} {library:5s}: {result['seconds']:6.1f} s ({where})")
    medians = {lib: median(values) for lib, values in times.items()}
    out(
        f"solve CartPole-v1 (median of {seeds} seeds): qnorm {medians['qnorm']:.1f} s, "
        f"sb3 {medians['sb3']:.1f} s"
    )
    return medians


def config_list(names: list[str]) -> list[BenchConfig]:
    """The named benchmark configurations."""
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise QnormError(f"unknown benchmark config(s) {unknown}; known: {', '.join(CONFIGS)}")
    return [CONFIGS[n] for n in names]
