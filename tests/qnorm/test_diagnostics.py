"""The running-vs-batch statistics gap, on MLP and conv networks (statistics per channel)."""

import pytest
import torch
from net_state import snapshot

import qnorm
from qnorm.diagnostics import running_vs_batch_gap

NORMS = qnorm.norm_names()
BATCH_STAT_NORMS = tuple(n for n in NORMS if qnorm.get_norm_kind(n).uses_batch_statistics)
OBS_SHAPE = (2, 9, 9)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.set_num_threads(1)


def conv_net(norm, obs_shape=OBS_SHAPE, **kw):
    torch.manual_seed(0)
    spec = qnorm.ConvQNetworkSpec(
        obs_shape,
        3,
        channels=(4,),
        kernels=(3,),
        strides=(2,),
        pools=(0,),
        hidden_sizes=(8,),
        norm=norm,
        norm_groups=2,
        **kw,
    )
    return qnorm.build_q_network(spec)


def expected_gap(x, norm, channel_dim):
    """Mean |running-normalized - batch-normalized| with statistics per ``channel_dim``."""
    rows = x.movedim(channel_dim, -1).reshape(-1, x.shape[channel_dim])
    var, mean = torch.var_mean(rows, dim=0, correction=0)
    by_batch = (rows - mean) / torch.sqrt(var + norm.eps)
    by_running = (rows - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps)
    return float((by_running - by_batch).abs().mean())


@pytest.mark.parametrize("obs_scale", [1.0, 0.5])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("norm", BATCH_STAT_NORMS)
def test_conv_gap_uses_per_channel_statistics_of_the_prepared_input(norm, channels_last, obs_scale):
    shape = (9, 9, 2) if channels_last else OBS_SHAPE
    net = conv_net(
        norm, norm_target="torso", channels_last=channels_last, obs_scale=obs_scale, obs_shape=shape
    )
    with qnorm.learning_mode(net), torch.no_grad():
        for _ in range(3):
            net(torch.randn(16, *shape) * 2.0 + 1.0)
    obs = torch.randint(0, 4, (32, *shape), dtype=torch.uint8)
    net.train()
    before = snapshot(net)

    gap = running_vs_batch_gap(net, obs)

    x = obs.to(torch.float32) * obs_scale
    if channels_last:
        x = x.permute(0, 3, 1, 2)
    with torch.no_grad():
        conv_out = net.layers.conv1(x)
    assert gap == pytest.approx(expected_gap(conv_out, net.layers.conv_norm1, 1), rel=1e-5)
    assert gap > 0.01
    assert all(torch.equal(t, net.state_dict()[k]) for k, t in before.items())
    assert all(m.training for m in net.modules())


def test_conv_gap_is_zero_when_running_statistics_are_the_batchs():
    net = conv_net("batchnorm", norm_target="torso")
    obs = torch.randn(32, *OBS_SHAPE) * 3.0 + 1.0
    norm = net.layers.conv_norm1
    with torch.no_grad():
        rows = net.layers.conv1(obs).movedim(1, -1).reshape(-1, 4)
        var, mean = torch.var_mean(rows, dim=0, correction=0)
        norm.running_mean.copy_(mean)
        norm.running_var.copy_(var)
    assert running_vs_batch_gap(net, obs) == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("norm", BATCH_STAT_NORMS)
def test_gap_averages_over_torso_and_head_norms(norm):
    net = conv_net(norm, placement="after")
    with qnorm.learning_mode(net), torch.no_grad():
        net(torch.randn(16, *OBS_SHAPE) + 2.0)
    obs = torch.randn(16, *OBS_SHAPE)
    with torch.no_grad():
        maps = net.layers.conv_act1(net.layers.conv1(obs))
        vectors = net.layers.act1(
            net.layers.linear1(net.layers.flatten(net.layers.conv_norm1.eval()(maps)))
        )
    expected = (
        expected_gap(maps, net.layers.conv_norm1, 1) + expected_gap(vectors, net.layers.norm1, -1)
    ) / 2
    assert running_vs_batch_gap(net, obs) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("norm", [n for n in NORMS if n not in BATCH_STAT_NORMS])
def test_no_gap_without_a_batch_statistics_norm(norm):
    assert running_vs_batch_gap(conv_net(norm), torch.randn(4, *OBS_SHAPE)) is None
    mlp = qnorm.build_q_network(qnorm.QNetworkSpec(4, 2, (8,), norm=norm, norm_groups=2))
    assert running_vs_batch_gap(mlp, torch.randn(4, 4)) is None


def test_mlp_gap_uses_per_feature_statistics():
    net = qnorm.build_q_network(qnorm.QNetworkSpec(4, 2, (8,), norm="batchnorm", input_norm=True))
    with qnorm.learning_mode(net), torch.no_grad():
        net(torch.randn(16, 4) * 2.0 + 3.0)
    obs = torch.randn(32, 4)
    with torch.no_grad():
        hidden = net.layers.linear1(net.layers.input_norm.eval()(obs))
    expected = (
        expected_gap(obs, net.layers.input_norm, -1) + expected_gap(hidden, net.layers.norm1, -1)
    ) / 2
    assert running_vs_batch_gap(net, obs) == pytest.approx(expected, rel=1e-5)
