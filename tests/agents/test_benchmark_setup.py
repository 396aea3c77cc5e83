"""The benchmark gives both libraries identical work; the stop rule ends a run early."""

import dataclasses

import pytest
import torch

from agents import train
from agents.bench.configs import CONFIGS
from agents.bench.runners import qnorm_train_config
from agents.cli import config_from_flags


@pytest.mark.parametrize("name", list(CONFIGS))
def test_qnorm_side_uses_every_benchmark_setting(name, tmp_path):
    bench = CONFIGS[name]
    config = qnorm_train_config(bench, "batchnorm", 3, 1, str(tmp_path))
    dqn, net, run = config.dqn, config.network, config.run
    shared = {f.name for f in dataclasses.fields(bench)} - {"name", "env_id", "hidden_sizes"}
    shared -= {"total_timesteps"}
    for field in shared:
        assert getattr(dqn, field) == getattr(bench, field), field
    assert run.total_timesteps == bench.total_timesteps and run.env_id == bench.env_id
    assert net.hidden_sizes == bench.hidden_sizes and net.norm == "batchnorm"
    assert dqn.double_dqn is False  # SB3's DQN has no Double DQN
    assert run.eval_freq == 0 and run.progress is False and run.torch_threads == 1


def test_sb3_side_has_the_same_network_and_settings():
    pytest.importorskip("stable_baselines3")
    from agents.bench.runners import make_sb3_dqn

    bench = CONFIGS["zoo"]
    model = make_sb3_dqn(bench, "batchnorm", 0)
    assert model.batch_size == bench.batch_size and model.gradient_steps == bench.gradient_steps
    assert model.target_update_interval == bench.target_update_interval
    assert model.train_freq.frequency == bench.train_freq
    assert model.learning_starts == bench.learning_starts
    layers = [type(m).__name__ for m in model.q_net.q_net]
    assert layers.count("Linear") == 3 and layers.count("FeatureBatchNorm") == 2
    assert len(model.batch_norm_stats) == 4  # running mean and var of both norms
    online = dict(model.q_net.named_parameters())
    target = dict(model.q_net_target.named_parameters())
    assert online.keys() == target.keys()
    assert all(torch.equal(online[k], target[k]) for k in online)
    optimized = {id(p) for group in model.policy.optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in model.q_net.parameters()}


def test_stop_rule_ends_training_after_the_evaluation_that_asks(tmp_path):
    torch.set_num_threads(1)
    config = config_from_flags(
        {
            "run.total_timesteps": 2000,
            "run.eval_freq": 500,
            "run.eval_episodes": 1,
            "run.run_dir": str(tmp_path / "run"),
            "run.progress": False,
            "network.hidden_sizes": (16,),
            "dqn.learning_starts": 100,
        }
    )
    asked = []
    result = train(config, should_stop=lambda step, mean: asked.append(step) or step >= 1000)
    assert asked == [500, 1000]
    assert result.global_step == 1000
    assert (result.final_checkpoint / "model.safetensors").is_file()
