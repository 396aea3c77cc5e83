"""scripts/plot.py renders TensorBoard curves of run directories to a PNG."""

from script_helpers import PLOT, TRAIN, run_script

TRAIN_ARGS = [
    *("--total-timesteps", "600", "--eval-freq", "200", "--eval-episodes", "1"),
    *("--hidden-sizes", "16", "--learning-starts", "100", "--batch-size", "16"),
    "--no-progress",
]


def test_plot_two_runs_to_png_and_reject_a_missing_tag(tmp_path):
    runs = [tmp_path / "a", tmp_path / "b"]
    for seed, run_dir in enumerate(runs):
        assert run_script(TRAIN, *TRAIN_ARGS, "--seed", seed, "--run-dir", run_dir).returncode == 0
    out = tmp_path / "curves.png"
    done = run_script(PLOT, *runs, "--out", out)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    bad = run_script(PLOT, runs[0], "--tag", "no/such_tag", "--out", tmp_path / "x.png")
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: ") and "eval/mean_return" in bad.stderr
    assert not (tmp_path / "x.png").exists()
