"""The benchmark gives both libraries identical work; the stop rule ends a run early."""

import dataclasses

import pytest
import torch

from agents import train
from agents.bench.configs import CONFIGS
from agents.bench.runners import qnorm_train_config
from agents.cli import config_from_flags
from agents.schedules import linear_epsilon
from qnorm import QnormError


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


# A stand-in for MinAtar's examples/dqn.py with the names the runner uses; its command line
# must never run when the benchmark imports it.
STUB_REFERENCE = """
NUM_FRAMES = 5_000_000
TRAINING_FREQ = 1
REPLAY_START_SIZE = 100


class Environment:
    def __init__(self, game):
        self.game = game


def train():
    pass


def dqn(env, replay_off, target_off, output_file_name):
    for t in range(NUM_FRAMES):
        if t > REPLAY_START_SIZE:
            train()


if __name__ == "__main__":
    raise SystemExit("the reference's command line ran")
"""


def test_minatar_comparison_alternates_and_reports_the_ratio(tmp_path, monkeypatch):
    pytest.importorskip("minatar", reason="qnorm's side trains on MinAtar Breakout")
    from agents.bench import pixel_suite, worker

    torch.set_num_threads(1)
    stub = tmp_path / "dqn.py"
    stub.write_text(STUB_REFERENCE)
    jobs = []
    # The worker's own code, in this process: no fresh interpreters to start in a test.
    monkeypatch.setattr(pixel_suite, "run_job", lambda job: jobs.append(job) or worker.run(job))
    lines = []
    summary = pixel_suite.minatar_comparison(str(stub), 300, 2, 1, lines.append)
    assert [job["library"] for job in jobs] == ["qnorm", "reference"] * 2
    assert [job["seed"] for job in jobs] == [0, 0, 1, 1]
    assert all(job["steps"] == 300 and job["threads"] == 1 for job in jobs)
    assert summary["ratio"] > 0 and f"{summary['ratio']:.2f}x overall" in lines[-1]
    assert summary["learning_ratio"] is None  # qnorm learns from step 5000 on only
    assert sum("repeat" in line for line in lines) == 2
    assert lines[-1].startswith("minatar ratio qnorm/reference (median of 2 pairs)")
    assert "5x aim" in lines[-1]


def test_reference_runs_its_frames_and_times_its_updates(tmp_path):
    pytest.importorskip("minatar", reason="the runner imports MinAtar before its clock")
    from agents.bench.minatar_speed import time_reference

    stub = tmp_path / "dqn.py"
    stub.write_text(STUB_REFERENCE)
    timing = time_reference(stub, 300, 0, 1)
    assert timing.steps == 300 and timing.learning_steps == 199  # frames 101..299 update
    assert 0 < timing.learning_seconds <= timing.seconds


@pytest.mark.parametrize("name", ["missing.py", "."])
def test_minatar_reference_must_be_a_file(name, tmp_path):
    from agents.bench.minatar_speed import load_reference

    with pytest.raises(QnormError, match="is not a file"):
        load_reference(tmp_path / name)


def test_minatar_reference_without_the_runner_names_is_refused(tmp_path):
    from agents.bench.minatar_speed import load_reference

    path = tmp_path / "other.py"
    path.write_text("NUM_FRAMES = 1\n")
    with pytest.raises(QnormError, match="dqn, train"):
        load_reference(path)


@pytest.mark.parametrize("steps", [20_000, 400_000])
def test_qnorm_minatar_run_is_the_start_of_the_presets_full_run(steps, tmp_path):
    from agents.bench.minatar_speed import ENV_ID, qnorm_config

    config = qnorm_config(steps, 3, 1, str(tmp_path))
    full = config_from_flags({"run.env_id": ENV_ID})
    dqn, run = config.dqn, config.run
    assert run.total_timesteps == steps and run.eval_freq == 0 and run.progress is False
    assert run.torch_threads == 1 and run.seed == 3
    same = ("optimizer", "learning_rate", "batch_size", "learning_starts", "train_freq")
    assert all(getattr(dqn, f) == getattr(full.dqn, f) for f in same)
    assert config.network == full.network
    for step in (0, 5_000, steps // 2, steps - 1):
        ours = linear_epsilon(step, steps, dqn.exploration_fraction, 1.0, dqn.exploration_final_eps)
        theirs = linear_epsilon(
            step,
            full.run.total_timesteps,
            full.dqn.exploration_fraction,
            1.0,
            full.dqn.exploration_final_eps,
        )
        assert ours == pytest.approx(theirs), step


@pytest.mark.parametrize(
    "case, optimizer, conv", [(0, "rmsprop", (16, 3, 1)), (1, "adam", (32, 8, 4))]
)
def test_pixel_latency_agents_are_built_as_training_builds_them(case, optimizer, conv):
    from agents.bench.pixel_latency import PIXEL_CASES, make_agent

    torch.set_num_threads(1)
    agent = make_agent(PIXEL_CASES[case], "bn torso")
    first = agent.online.layers[0]
    assert (first.out_channels, first.kernel_size[0], first.stride[0]) == conv
    assert agent.config.optimizer == optimizer and agent.config.batch_size == 32
    assert agent.spec.norm == "batchnorm" and agent.spec.norm_target == "torso"
    assert not agent.online.training  # acting and eval forwards run on an eval-mode net
