"""Checkpoints: atomic safetensors + JSON, rebuilt from the directory alone, never unpickled."""

import json
import pickle
import shutil

import pytest
import torch
from safetensors import safe_open

import agents.checkpoint as checkpoint_module
import qnorm
from agents.checkpoint import (
    CONFIG_FILE,
    FORMAT_VERSION,
    MODEL_FILE,
    checkpoint_metadata,
    load_policy,
    save_checkpoint,
)
from agents.config import TrainConfig
from qnorm import QNetworkSpec, QnormError

OBS_DIM, NUM_ACTIONS = 4, 2


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.set_num_threads(1)


def trained_net(norm="batchnorm", hidden=(32, 32), seed=0, dueling=False):
    """A network whose weights and running statistics are away from their initial values."""
    torch.manual_seed(seed)
    spec = QNetworkSpec(OBS_DIM, NUM_ACTIONS, hidden, norm=norm, dueling=dueling)
    net = qnorm.build_q_network(spec)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
        with qnorm.learning_mode(net):
            for _ in range(3):
                net(2.0 + 3.0 * torch.randn(32, OBS_DIM))
    return spec, net.eval()


def metadata(spec, step=123):
    return checkpoint_metadata(
        spec, "CartPole-v1", (OBS_DIM,), "float32", step, TrainConfig().to_dict()
    )


def save(path, norm="batchnorm", step=123, **kwargs):
    spec, net = trained_net(norm, **kwargs)
    save_checkpoint(path, net, metadata(spec, step))
    return spec, net


def probe():
    return torch.randn(64, OBS_DIM, generator=torch.Generator().manual_seed(1)) * 2


def single_line(exc_info):
    message = str(exc_info.value)
    assert message and "\n" not in message, message
    return message


@pytest.mark.parametrize("norm", qnorm.norm_names())
@pytest.mark.parametrize("dueling", [False, True])
def test_load_policy_rebuilds_an_identical_network_in_eval_mode(tmp_path, norm, dueling):
    spec, net = save(tmp_path / "ckpt", norm, dueling=dueling)
    expected = qnorm.q_values(net, probe())
    moved = tmp_path / "elsewhere"  # rebuilt from the directory alone
    shutil.move(str(tmp_path / "ckpt"), moved)
    del net
    policy = load_policy(moved)
    assert policy.spec == spec
    assert not any(m.training for m in policy.network.modules())
    assert not any(p.requires_grad for p in policy.network.parameters())
    assert torch.equal(policy.network(probe()), expected)
    assert (policy.env_id, policy.obs_shape, policy.obs_dtype, policy.step) == (
        "CartPole-v1",
        (OBS_DIM,),
        "float32",
        123,
    )
    assert policy.path == moved
    assert policy.metadata["format_version"] == FORMAT_VERSION
    assert policy.metadata["qnorm_version"] == qnorm.__version__
    assert TrainConfig.from_dict(policy.metadata["train_config"]) == TrainConfig()


def test_batchnorm_running_stats_are_saved(tmp_path):
    _, net = save(tmp_path / "ckpt")
    policy = load_policy(tmp_path / "ckpt")
    saved = dict(policy.network.named_buffers())
    names = [n for n in saved if n.endswith("running_mean")]
    assert names
    for name, b in net.named_buffers():
        assert torch.equal(saved[name], b), name
    fresh = qnorm.build_q_network(policy.spec)
    assert not torch.equal(dict(fresh.named_buffers())[names[0]], saved[names[0]])


def test_model_file_is_a_real_safetensors_file(tmp_path):
    _, net = save(tmp_path / "ckpt")
    with safe_open(str(tmp_path / "ckpt" / MODEL_FILE), framework="pt") as f:
        keys = set(f.keys())
        assert f.metadata() == {"format": "qnorm"}
        for k, v in net.state_dict().items():
            assert torch.equal(f.get_tensor(k), v), k
    assert keys == set(net.state_dict())
    config = json.loads((tmp_path / "ckpt" / CONFIG_FILE).read_text())
    assert config["network"]["norm"] == "batchnorm"
    assert config["observation_shape"] == [OBS_DIM]


def test_loading_never_unpickles(tmp_path, monkeypatch):
    _, net = save(tmp_path / "ckpt")

    def forbidden(*args, **kwargs):
        raise AssertionError("unpickling is forbidden")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    policy = load_policy(tmp_path / "ckpt")
    assert torch.equal(policy.network(probe()), qnorm.q_values(net, probe()))


def test_writing_leaves_no_temporary_siblings(tmp_path):
    save(tmp_path / "checkpoints" / "final")
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["final"]
    assert sorted(p.name for p in (tmp_path / "checkpoints" / "final").iterdir()) == [
        CONFIG_FILE,
        MODEL_FILE,
    ]


def test_overwriting_a_checkpoint_replaces_it(tmp_path):
    target = tmp_path / "ckpt"
    save(target, step=1, seed=0)
    (target / "stale.txt").write_text("from the old checkpoint")
    _, newer = save(target, step=2, seed=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert sorted(p.name for p in target.iterdir()) == [CONFIG_FILE, MODEL_FILE]
    policy = load_policy(target)
    assert policy.step == 2
    assert torch.equal(policy.network(probe()), qnorm.q_values(newer, probe()))


def test_a_failed_write_keeps_the_old_checkpoint_and_leaves_no_temporaries(tmp_path, monkeypatch):
    target = tmp_path / "ckpt"
    _, old = save(target, step=1)

    def broken(path, data):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module, "write_json", broken)
    with pytest.raises(OSError, match="disk full"):
        save(target, step=2, seed=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    policy = load_policy(target)
    assert policy.step == 1
    assert torch.equal(policy.network(probe()), qnorm.q_values(old, probe()))


def test_load_policy_on_a_run_dir_picks_the_final_checkpoint(tmp_path):
    run = tmp_path / "run"
    save(run / "checkpoints" / "500", step=500, seed=1)
    save(run / "checkpoints" / "best", step=700, seed=2)
    _, final = save(run / "checkpoints" / "final", step=1000, seed=3)
    (run / "config.json").write_text(json.dumps(TrainConfig().to_dict()))
    policy = load_policy(run)
    assert policy.step == 1000
    assert policy.path == run / "checkpoints" / "final"
    assert torch.equal(policy.network(probe()), qnorm.q_values(final, probe()))
    assert load_policy(run / "checkpoints" / "500").step == 500


# --- bad checkpoints: one QnormError with one sentence -----------------------------------------


def test_missing_path(tmp_path):
    with pytest.raises(QnormError) as exc:
        load_policy(tmp_path / "nowhere")
    assert "nowhere" in single_line(exc)


def test_directory_without_checkpoint(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(QnormError) as exc:
        load_policy(tmp_path / "empty")
    assert "no checkpoint" in single_line(exc)
    save(tmp_path / "half")
    (tmp_path / "half" / MODEL_FILE).unlink()  # config.json alone is not a checkpoint
    with pytest.raises(QnormError) as exc:
        load_policy(tmp_path / "half")
    single_line(exc)


def test_truncated_model_file(tmp_path):
    save(tmp_path / "ckpt")
    model = tmp_path / "ckpt" / MODEL_FILE
    data = model.read_bytes()
    model.write_bytes(data[: len(data) // 2])
    with pytest.raises(QnormError) as exc:
        load_policy(tmp_path / "ckpt")
    assert MODEL_FILE in single_line(exc)


def test_model_file_of_garbage(tmp_path):
    save(tmp_path / "ckpt")
    (tmp_path / "ckpt" / MODEL_FILE).write_bytes(b"\x80\x04not a safetensors file at all")
    with pytest.raises(QnormError) as exc:
        load_policy(tmp_path / "ckpt")
    single_line(exc)


@pytest.mark.parametrize("content", ["{not json", "", "[1, 2]", '{"env_id": "CartPole-v1"}'])
def test_corrupt_config(tmp_path, content):
    save(tmp_path / "ckpt")
    (tmp_path / "ckpt" / CONFIG_FILE).write_text(content)
    with pytest.raises(QnormError) as exc:
        load_policy(tmp_path / "ckpt")
    assert CONFIG_FILE in single_line(exc)


def test_config_missing_a_field(tmp_path):
    save(tmp_path / "ckpt")
    path = tmp_path / "ckpt" / CONFIG_FILE
    data = json.loads(path.read_text())
    del data["network"]
    path.write_text(json.dumps(data))
    with pytest.raises(QnormError) as exc:
        load_policy(tmp_path / "ckpt")
    single_line(exc)


def test_newer_format_version(tmp_path):
    save(tmp_path / "ckpt")
    path = tmp_path / "ckpt" / CONFIG_FILE
    data = json.loads(path.read_text())
    data["format_version"] = FORMAT_VERSION + 1
    path.write_text(json.dumps(data))
    with pytest.raises(QnormError) as exc:
        load_policy(tmp_path / "ckpt")
    assert "version" in single_line(exc)


def test_tensors_that_do_not_fit_the_network_spec(tmp_path):
    save(tmp_path / "small", hidden=(16, 16))
    save(tmp_path / "big", hidden=(32, 32))
    shutil.copy(tmp_path / "small" / MODEL_FILE, tmp_path / "big" / MODEL_FILE)
    with pytest.raises(QnormError) as exc:
        load_policy(tmp_path / "big")
    assert "does not fit" in single_line(exc)


def test_tensors_of_another_norm_kind(tmp_path):
    save(tmp_path / "bn", norm="batchnorm")
    save(tmp_path / "plain", norm="none")
    shutil.copy(tmp_path / "bn" / MODEL_FILE, tmp_path / "plain" / MODEL_FILE)
    with pytest.raises(QnormError) as exc:
        load_policy(tmp_path / "plain")
    single_line(exc)
