"""The CUDA path: replay storage and sampling on the GPU, training end to end (needs a GPU)."""

import numpy as np
import pytest
import torch

from agents import train
from agents.cli import config_from_flags
from agents.replay import ReplayBuffer

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
def test_replay_lives_and_samples_on_the_gpu():
    buffer = ReplayBuffer(100, (4,), np.float32, device="cuda", seed=0)
    n = 10
    obs = np.random.default_rng(0).normal(size=(n, 4)).astype(np.float32)
    buffer.add(obs, np.ones(n, np.int64), np.ones(n), obs, np.zeros(n), np.zeros(n))
    batch = buffer.sample_batches(3, 8)
    assert all(field.device.type == "cuda" for field in batch.tensors())
    assert batch.obs.shape == (3, 8, 4)


@cuda
@pytest.mark.parametrize("norm", ["none", "batchnorm"])
def test_training_runs_on_the_gpu(tmp_path, norm):
    config = config_from_flags(
        {
            "run.env_id": "CartPole-v1",
            "run.total_timesteps": 600,
            "run.device": "cuda",
            "run.run_dir": str(tmp_path / "run"),
            "run.eval_freq": 300,
            "run.progress": False,
            "network.norm": norm,
            "network.hidden_sizes": (32, 32),
            "dqn.learning_starts": 100,
            "dqn.train_freq": 4,
            "dqn.gradient_steps": 2,
            "dqn.batch_size": 16,
            "dqn.buffer_size": 1000,
        }
    )
    result = train(config)
    assert result.global_step == 600
    assert (result.final_checkpoint / "model.safetensors").is_file()


def test_auto_device_is_cpu_without_a_gpu(tmp_path):
    from agents.training import resolve_device

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
