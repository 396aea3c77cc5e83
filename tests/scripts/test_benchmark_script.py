"""scripts/benchmark.py runs end to end on a tiny config and prints its ratio lines."""

import pytest
from script_helpers import BENCHMARK, assert_clean_success, assert_one_error_line, run_script


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


PIXELS_QUICK = ("--pixels", "--skip-speed", "--pixel-repeats", "1")


def test_pixels_prints_cnn_latencies_beside_no_norm():
    done = run_script(BENCHMARK, *PIXELS_QUICK, "--pixel-seconds", "0.001")
    assert_clean_success(done)
    lines = done.stdout.splitlines()
    cnn = [line.strip() for line in lines if line.startswith("  ")]  # the CNN rows
    for net in ("minatar", "nature"):
        assert any(line.startswith(f"{net} net on ") for line in lines), net
        overhead = [line for line in cnn if line.startswith(f"{net} batchnorm over none")]
        assert len(overhead) == 1 and "folded" in overhead[0], overhead
    for label in ("act one state", "update step", "eval forward batch  1", "eval forward batch 32"):
        rows = [line for line in cnn if line.startswith(label)]
        assert len(rows) == 2, rows
        assert all("batchnorm" in row and "bn torso" in row and "x)" in row for row in rows)
    forward = [line for line in cnn if line.startswith("eval forward")]
    assert all("batchnorm folded" in row and "bn torso folded" in row for row in forward)
    assert "latency none" not in done.stdout  # the CNN rows replace the MLP ones
    assert "MinAtar Breakout training speed" not in done.stdout  # no reference given


def test_a_missing_minatar_reference_fails_before_any_timing(tmp_path):
    done = run_script(BENCHMARK, *PIXELS_QUICK, "--minatar-reference", tmp_path / "no_dqn.py")
    line = assert_one_error_line(done)
    assert "not a file" in line and done.stdout == ""


def test_snapshots_prints_the_cost_of_each_snapshot_and_cleans_up(tmp_path):
    done = run_script(
        BENCHMARK,
        *("--snapshots", "--snapshot-atari", "40000", "--snapshot-new", "500"),
        *("--repeats", "2", "--snapshot-dir", tmp_path),
    )
    assert_clean_success(done)
    lines = done.stdout.splitlines()
    cost = [line for line in lines if " MB written, " in line]
    assert [line.split(":")[0].strip() for line in cost] == [
        "CartPole, 100,000 transitions",
        "first snapshot (every frame)",
        "after 500 more frames",
    ]
    first, later = (float(line.split(", ")[1].split()[0]) for line in cost[1:])
    # 40,000 frames of 7 kB in five chunk files; then the one or two that 500 frames touch
    assert first > 280 and 60 < later < 150
    assert list(tmp_path.iterdir()) == []


def test_guard_cost_prints_the_guard_share_counted_and_side_by_side():
    done = run_script(
        BENCHMARK, "--guard-cost", "--configs", "per-step", "--total-timesteps", "1500"
    )
    assert_clean_success(done)
    per_call, row = done.stdout.splitlines()[1:3]
    assert per_call.startswith("guard per call: check_env ")
    assert row.startswith("per-step: 1,500 steps at ")
    share = float(row.split("guard counted ")[1].split("%")[0])
    ratio = float(row.split("with/without guard ")[1].split()[0])
    assert 0 < share < 100 and ratio > 0
    assert " 50 update phases" in row  # (1,500 - 1,000 learning starts) / train_freq 10
