"""scripts/benchmark.py runs end to end on a tiny config and prints its ratio lines."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_benchmark_prints_ratio_and_latency_lines():
    pytest.importorskip("stable_baselines3")
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "benchmark.py"),
            *("--configs", "per-step", "--norms", "none", "--repeats", "1"),
            *("--total-timesteps", "1500"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    ratio = [line for line in done.stdout.splitlines() if line.startswith("ratio per-step none")]
    assert len(ratio) == 1 and float(ratio[0].split()[5]) > 0
    assert "latency none" in done.stdout and "eval forward batch  1" in done.stdout
