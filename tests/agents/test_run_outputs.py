"""What a training run writes: config.json, TensorBoard tags, and checkpoints."""

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.checkpoint import CONFIG_FILE, MODEL_FILE, load_policy
from agents.config import TrainConfig
from agents.training import train

SCALAR_TAGS = {
    "charts/episodic_return",
    "charts/episodic_length",
    "charts/epsilon",
    "charts/SPS",
    "losses/td_loss",
    "losses/q_values",
    "eval/mean_return",
    "norm/q_train_eval_gap",
    "norm/greedy_agreement",
}


def run_config(run_dir, norm):
    config = TrainConfig()
    config.run.run_dir = str(run_dir)
    config.run.num_envs = 2
    config.run.total_timesteps = 1200  # charts/SPS and charts/epsilon are logged per 1000
    config.run.eval_freq = 600
    config.run.eval_episodes = 2
    config.run.checkpoint_freq = 400
    config.run.log_freq = 2
    config.run.diagnostics_freq = 4
    config.run.progress = False
    config.run.device = "cpu"
    config.network.hidden_sizes = (32, 32)
    config.network.norm = norm
    config.dqn.buffer_size = 2000
    config.dqn.batch_size = 16
    config.dqn.learning_starts = 100
    config.dqn.train_freq = 4
    config.dqn.target_update_interval = 50
    return config


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One batchnorm run and one without norm, shared by this module's tests."""
    torch.set_num_threads(1)
    out = {}
    for norm in ("batchnorm", "none"):
        config = run_config(tmp_path_factory.mktemp(norm) / "run", norm)
        out[norm] = (config, train(config))
    return out


def events(run_dir):
    acc = EventAccumulator(
        str(run_dir),
        size_guidance={
            "scalars": 0,
            "histograms": 0,
            "tensors": 0,
            "distributions": 0,
            "images": 0,
            "audio": 0,
        },
    )
    acc.Reload()
    return acc


def test_result_points_into_the_run_dir(runs):
    config, result = runs["batchnorm"]
    assert str(result.run_dir) == config.run.run_dir
    assert result.final_checkpoint == result.run_dir / "checkpoints" / "final"
    assert result.global_step == 1200
    assert [step for step, _ in result.evaluations] == [600, 1200]
    assert result.best_checkpoint == result.run_dir / "checkpoints" / "best"


def test_run_config_json_round_trips(runs):
    for config, result in runs.values():
        stored = json.loads((result.run_dir / "config.json").read_text())
        assert TrainConfig.from_dict(stored) == config


def test_checkpoints_are_written(runs):
    config, result = runs["batchnorm"]
    checkpoints = result.run_dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["1200", "400", "800", "best", "final"]
    for name in ("final", "400", "800", "1200", "best"):
        assert sorted(p.name for p in (checkpoints / name).iterdir()) == [CONFIG_FILE, MODEL_FILE]
    assert load_policy(checkpoints / "400").step == 400
    assert load_policy(checkpoints / "800").step == 800
    final = load_policy(result.run_dir)
    assert final.step == 1200 and final.env_id == "CartPole-v1"
    assert final.spec.norm == "batchnorm" and final.spec.hidden_sizes == (32, 32)
    assert TrainConfig.from_dict(final.metadata["train_config"]) == config
    # the final checkpoint holds the same network as the last periodic one
    last = load_policy(checkpoints / "1200")
    obs = torch.randn(8, 4)
    assert torch.equal(final.network(obs), last.network(obs))


def test_tensorboard_has_the_common_tags(runs):
    for norm, (_, result) in runs.items():
        assert list(result.run_dir.glob("events.out.tfevents.*")), norm
        acc = events(result.run_dir)
        missing = SCALAR_TAGS - set(acc.Tags()["scalars"])
        assert not missing, (norm, missing)
        evals = [(e.step, e.value) for e in acc.Scalars("eval/mean_return")]
        assert [s for s, _ in evals] == [600, 1200]
        assert [v for _, v in evals] == pytest.approx([r for _, r in result.evaluations])
        for e in acc.Scalars("norm/greedy_agreement"):
            assert 0.0 <= e.value <= 1.0
        for e in acc.Scalars("norm/q_train_eval_gap"):
            assert e.value >= 0.0
        weights = {t for t in acc.Tags()["scalars"] if t.startswith("norm/weight_norm/")}
        assert weights == {f"norm/weight_norm/layers.{n}" for n in ("linear1", "linear2", "q_head")}
        assert all(e.value > 0 for t in weights for e in acc.Scalars(t))
        assert all(e.value > 0 for e in acc.Scalars("charts/episodic_length"))


def test_hyperparameters_text(runs):
    config, result = runs["batchnorm"]
    acc = events(result.run_dir)
    tags = [t for t in acc.Tags()["tensors"] if t.startswith("hyperparameters")]
    assert tags, acc.Tags()
    text = acc.Tensors(tags[0])[0].tensor_proto.string_val[0].decode()
    assert "|dqn.batch_size|16|" in text
    assert "|network.norm|batchnorm|" in text
    assert f"|run.run_dir|{config.run.run_dir}|" in text


def test_norm_diagnostics_differ_by_norm(runs):
    gaps = {
        norm: [e.value for e in events(result.run_dir).Scalars("norm/q_train_eval_gap")]
        for norm, (_, result) in runs.items()
    }
    assert gaps["none"] and max(gaps["none"]) == pytest.approx(0.0, abs=1e-6)
    assert gaps["batchnorm"] and max(gaps["batchnorm"]) > 0.0
    agreement = [e.value for e in events(runs["none"][1].run_dir).Scalars("norm/greedy_agreement")]
    assert agreement and all(v == 1.0 for v in agreement)


def test_batchnorm_running_stats_histograms(runs):
    histograms = set(events(runs["batchnorm"][1].run_dir).Tags()["histograms"])
    for layer in ("norm1", "norm2"):
        assert f"norm/layers.{layer}/running_mean" in histograms, histograms
        assert f"norm/layers.{layer}/running_var" in histograms, histograms
    assert not events(runs["none"][1].run_dir).Tags()["histograms"]
