"""scripts/benchmark.py runs end to end on a tiny config and prints its ratio lines."""

import pytest
from script_helpers import BENCHMARK, run_script


def test_benchmark_prints_ratio_and_latency_lines():
    pytest.importorskip("stable_baselines3")
    done = run_script(
        BENCHMARK,
        *("--configs", "per-step", "--norms", "none", "--repeats", "1"),
        *("--total-timesteps", "1500"),
    )
    assert done.returncode == 0, done.stderr
    ratio = [line for line in done.stdout.splitlines() if line.startswith("ratio per-step none")]
    assert len(ratio) == 1 and float(ratio[0].split()[5]) > 0
    assert "latency none" in done.stdout and "eval forward batch  1" in done.stdout
