"""A DQN that does not learn is not a DQN: the default agent must solve CartPole-v1."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from agents import train
from agents.cli import config_from_flags

REPO = Path(__file__).resolve().parents[2]
SOLVED = 475.0  # CartPole-v1's reward threshold


@pytest.mark.slow
def test_default_agent_solves_cartpole(tmp_path):
    torch.set_num_threads(1)
    config = config_from_flags(
        {
            "run.env_id": "CartPole-v1",
            "run.seed": 0,
            "run.run_dir": str(tmp_path / "run"),
            "run.progress": False,
        }
    )
    result = train(config)
    assert max(mean for _, mean in result.evaluations) >= SOLVED

    # The best saved policy solves it on unseen episodes too, evaluated from its checkpoint
    # alone in a fresh process.
    assert result.best_checkpoint == result.run_dir / "checkpoints" / "best"
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "evaluate.py"),
            str(result.best_checkpoint),
            "--episodes",
            "20",
            "--seed",
            "123",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    summary = json.loads(out.stdout)
    assert summary["env_id"] == "CartPole-v1"
    assert summary["mean_return"] >= SOLVED, summary
