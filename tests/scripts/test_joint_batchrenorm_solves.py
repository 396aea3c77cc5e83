"""BatchRenorm with the joint-batch update solves CartPole-v1 from the command line."""

import json

import pytest
from script_helpers import EVALUATE, TRAIN, run_script


@pytest.mark.slow
def test_joint_batchrenorm_reaches_475_on_a_fixed_seed(tmp_path):
    run_dir = tmp_path / "run"
    train = run_script(
        TRAIN,
        *("--norm", "batchrenorm", "--bn-mode", "joint", "--env-id", "CartPole-v1"),
        *("--seed", "0", "--eval-freq", "2000", "--stop-when-solved", "--no-progress"),
        *("--run-dir", str(run_dir)),
    )
    assert train.returncode == 0, train.stderr
    config = json.loads((run_dir / "checkpoints" / "best" / "config.json").read_text())
    assert config["target_scheme"] == "joint_batch" and config["norm"] == "batchrenorm"
    assert config["step"] < 50_000  # stopped early: an evaluation reached the threshold

    evaluate = run_script(
        EVALUATE,
        str(run_dir / "checkpoints" / "best"),
        *("--episodes", "20", "--seed", "123", "--json"),
    )
    assert evaluate.returncode == 0, evaluate.stderr
    assert json.loads(evaluate.stdout)["mean_return"] >= 475.0
