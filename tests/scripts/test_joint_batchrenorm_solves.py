"""BatchRenorm with the joint-batch update solves CartPole-v1 from the command line."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_joint_batchrenorm_reaches_475_on_a_fixed_seed(tmp_path):
    run_dir = tmp_path / "run"
    train = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "train.py"),
            *("--norm", "batchrenorm", "--bn-mode", "joint", "--env-id", "CartPole-v1"),
            *("--seed", "0", "--eval-freq", "2000", "--stop-when-solved", "--no-progress"),
            *("--run-dir", str(run_dir)),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert train.returncode == 0, train.stderr
    config = json.loads((run_dir / "checkpoints" / "best" / "config.json").read_text())
    assert config["target_scheme"] == "joint_batch" and config["norm"] == "batchrenorm"
    assert config["step"] < 50_000  # stopped early: an evaluation reached the threshold

    evaluate = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "evaluate.py"),
            str(run_dir / "checkpoints" / "best"),
            *("--episodes", "20", "--seed", "123", "--json"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    assert json.loads(evaluate.stdout)["mean_return"] >= 475.0
