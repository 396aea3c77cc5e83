"""scripts/plot.py renders TensorBoard curves of run directories to a PNG."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TRAIN = [
    *("--total-timesteps", "600", "--eval-freq", "200", "--eval-episodes", "1"),
    *("--hidden-sizes", "16", "--learning-starts", "100", "--batch-size", "16"),
    "--no-progress",
]


def run(script, *args):
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / script), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )


def test_plot_two_runs_to_png_and_reject_a_missing_tag(tmp_path):
    runs = [tmp_path / "a", tmp_path / "b"]
    for seed, run_dir in enumerate(runs):
        assert run("train.py", *TRAIN, "--seed", seed, "--run-dir", run_dir).returncode == 0
    out = tmp_path / "curves.png"
    done = run("plot.py", *runs, "--out", out)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    bad = run("plot.py", runs[0], "--tag", "no/such_tag", "--out", tmp_path / "x.png")
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: ") and "eval/mean_return" in bad.stderr
    assert not (tmp_path / "x.png").exists()
