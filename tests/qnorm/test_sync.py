"""Target networks: creation, hard and soft sync; norm running statistics travel too."""

import math

import pytest
import torch
from net_state import snapshot

import qnorm

OBS_DIM, NUM_ACTIONS, HIDDEN = 6, 3, (16, 8)
GROUPS = 2  # divides OBS_DIM and HIDDEN, so groupnorm also fits the input norm
NORMS = qnorm.norm_names()


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.set_num_threads(1)


def build(norm="batchnorm", placement="before", input_norm=True, hidden=HIDDEN, seed=0):
    torch.manual_seed(seed)
    spec = qnorm.QNetworkSpec(
        OBS_DIM,
        NUM_ACTIONS,
        hidden,
        norm=norm,
        placement=placement,
        input_norm=input_norm,
        norm_groups=GROUPS,
    )
    return qnorm.build_q_network(spec)


def trained(net, input_shape):
    """``net`` after a few SGD steps: parameters and running statistics moved away from init."""
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    with qnorm.learning_mode(net):
        for _ in range(3):
            loss = net(torch.randn(*input_shape) * 2.0 + 1.0).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return net


def trained_online(norm, placement):
    """An online MLP whose parameters and running statistics moved away from init."""
    return trained(build(norm, placement, seed=0), (32, OBS_DIM))


def buffer_names(net):
    return {name for name, _ in net.named_buffers()}


def param_names(net):
    return {name for name, _ in net.named_parameters()}


@pytest.mark.parametrize("placement", qnorm.PLACEMENTS)
@pytest.mark.parametrize("norm", NORMS)
def test_soft_update_with_tau_one_equals_hard_update(norm, placement):
    online = trained_online(norm, placement)
    soft_target = qnorm.make_target(build(norm, placement, seed=1))
    hard_target = qnorm.make_target(build(norm, placement, seed=1))
    assert not torch.equal(
        soft_target.layers.linear1.weight, online.layers.linear1.weight
    )  # the update has something to do

    soft_target.train()  # an update leaves the target in eval mode whatever it was
    qnorm.soft_update(soft_target, online, tau=1.0)
    qnorm.hard_update(hard_target, online)

    online_state, soft_state, hard_state = (
        online.state_dict(),
        soft_target.state_dict(),
        hard_target.state_dict(),
    )
    assert list(soft_state) == list(online_state) == list(hard_state)
    for name, tensor in online_state.items():
        assert torch.equal(soft_state[name], tensor), name
        assert torch.equal(hard_state[name], tensor), name
    if norm == "batchnorm":
        assert {"layers.norm1.running_mean", "layers.norm1.running_var"} <= buffer_names(online)
        assert int(soft_target.layers.norm1.num_batches_tracked) == 3
        assert int(hard_target.layers.input_norm.num_batches_tracked) == 3
    for target in (soft_target, hard_target):
        assert not any(m.training for m in target.modules())
        assert not any(p.requires_grad for p in target.parameters())


@pytest.mark.parametrize("placement", qnorm.PLACEMENTS)
@pytest.mark.parametrize("norm", NORMS)
def test_soft_update_averages_parameters_and_copies_buffers(norm, placement):
    online = trained_online(norm, placement)
    target = qnorm.make_target(build(norm, placement, seed=1))
    target_before = snapshot(target)
    online_before = snapshot(online)

    qnorm.soft_update(target, online, tau=0.5)

    state = target.state_dict()
    for name in param_names(online):
        expected = 0.5 * (target_before[name] + online_before[name])
        torch.testing.assert_close(state[name], expected, rtol=1e-6, atol=1e-7)
        if not torch.equal(target_before[name], online_before[name]):
            assert not torch.equal(state[name], online_before[name]), name
    for name in buffer_names(online):
        assert torch.equal(state[name], online_before[name]), name
    for name, tensor in online.state_dict().items():
        assert torch.equal(tensor, online_before[name]), "the online network must not change"
    assert not any(m.training for m in target.modules())


def test_soft_update_small_tau_moves_a_little():
    online = trained_online("batchnorm", "before")
    target = qnorm.make_target(build("batchnorm", "before", seed=1))
    w0 = target.layers.linear1.weight.clone()
    qnorm.soft_update(target, online, tau=0.01)
    expected = w0 + 0.01 * (online.layers.linear1.weight.detach() - w0)
    torch.testing.assert_close(target.layers.linear1.weight, expected)


@pytest.mark.parametrize("norm", NORMS)
def test_make_target_is_a_frozen_eval_copy(norm):
    online = trained_online(norm, "before")
    online.train()
    target = qnorm.make_target(online)

    assert target is not online
    assert not any(m.training for m in target.modules())
    assert not any(p.requires_grad for p in target.parameters())
    assert all(p.requires_grad for p in online.parameters())
    assert online.training
    for name, tensor in online.state_dict().items():
        assert torch.equal(target.state_dict()[name], tensor), name
    # An independent copy: changing the online network leaves the target alone.
    with torch.no_grad():
        online.layers.linear1.weight.add_(1.0)
    assert not torch.equal(target.layers.linear1.weight, online.layers.linear1.weight)


@pytest.mark.parametrize("update", ["hard", "soft"])
@pytest.mark.parametrize(
    ("target_kw", "online_kw"),
    [
        ({"hidden": (16, 8)}, {"hidden": (16, 4)}),
        ({"hidden": (16, 8)}, {"hidden": (16, 8, 4)}),
        ({"norm": "batchnorm"}, {"norm": "none"}),
        # Same parameters, different buffers: only the buffers can tell them apart.
        (
            {"norm": "layernorm", "placement": "after"},
            {"norm": "batchnorm", "placement": "after"},
        ),
    ],
)
def test_mismatched_networks_are_a_qnorm_error(update, target_kw, online_kw):
    target = qnorm.make_target(build(seed=1, **target_kw))
    online = build(seed=0, **online_kw)
    before = snapshot(target)
    with pytest.raises(qnorm.QnormError, match="different"):
        if update == "hard":
            qnorm.hard_update(target, online)
        else:
            qnorm.soft_update(target, online, tau=0.5)
    # A refused update leaves the target as it was.
    for name, tensor in target.state_dict().items():
        assert torch.equal(tensor, before[name]), name


@pytest.mark.parametrize("tau", [0.0, -0.1, 1.0001, 2.0, math.nan])
def test_tau_outside_zero_one_is_a_qnorm_error(tau):
    online = build(seed=0)
    target = qnorm.make_target(build(seed=1))
    before = snapshot(target)
    with pytest.raises(qnorm.QnormError, match="tau"):
        qnorm.soft_update(target, online, tau=tau)
    for name, tensor in target.state_dict().items():
        assert torch.equal(tensor, before[name]), name


# --- conv networks: 2-D norm buffers travel too ---------------------------------------------


def build_conv(norm, placement="before", channels=(4, 8), seed=0):
    torch.manual_seed(seed)
    spec = qnorm.ConvQNetworkSpec(
        (3, 10, 10),
        NUM_ACTIONS,
        channels=channels,
        kernels=(3, 3),
        strides=(2, 1),
        pools=(0, 0),
        hidden_sizes=(8,),
        norm=norm,
        placement=placement,
        norm_groups=GROUPS,
    )
    return qnorm.build_q_network(spec)


def trained_conv(norm, placement):
    """A conv network whose parameters and 2-D running statistics moved away from init."""
    return trained(build_conv(norm, placement, seed=0), (8, 3, 10, 10))


@pytest.mark.parametrize("update", ["hard", "soft"])
@pytest.mark.parametrize("placement", qnorm.PLACEMENTS)
@pytest.mark.parametrize("norm", NORMS)
def test_conv_network_sync_copies_feature_map_statistics(norm, placement, update):
    online = trained_conv(norm, placement)
    target = qnorm.make_target(build_conv(norm, placement, seed=1))
    target_before, online_before = snapshot(target), snapshot(online)
    if update == "hard":
        qnorm.hard_update(target, online)
    else:
        qnorm.soft_update(target, online, tau=0.5)
    state = target.state_dict()
    for name in buffer_names(online):
        assert torch.equal(state[name], online_before[name]), name
    for name in param_names(online):
        expected = online_before[name]
        if update == "soft":
            expected = 0.5 * (target_before[name] + online_before[name])
        torch.testing.assert_close(state[name], expected, rtol=1e-6, atol=1e-7)
    if qnorm.get_norm_kind(norm).uses_batch_statistics:
        # The per-channel statistics of the torso moved in training and now sit in the target.
        assert {f"layers.conv_norm{i}.running_mean" for i in (1, 2)} <= buffer_names(online)
        assert target.layers.conv_norm2.running_var.shape == (8,)
        assert not torch.equal(
            target_before["layers.conv_norm1.running_mean"],
            state["layers.conv_norm1.running_mean"],
        )
        assert int(target.layers.conv_norm1.num_batches_tracked) == 3
    assert not any(m.training for m in target.modules())
    x = torch.randn(4, 3, 10, 10)
    if update == "hard":
        with torch.no_grad(), qnorm.eval_mode(online):
            assert torch.equal(target(x), online(x))


@pytest.mark.parametrize("update", ["hard", "soft"])
def test_mismatched_conv_networks_are_a_qnorm_error(update):
    target = qnorm.make_target(build_conv("batchnorm", channels=(4, 4), seed=1))
    online = build_conv("batchnorm", channels=(4, 8), seed=0)
    before = snapshot(target)
    with pytest.raises(qnorm.QnormError, match="different"):
        if update == "hard":
            qnorm.hard_update(target, online)
        else:
            qnorm.soft_update(target, online, tau=0.5)
    for name, tensor in target.state_dict().items():
        assert torch.equal(tensor, before[name]), name
