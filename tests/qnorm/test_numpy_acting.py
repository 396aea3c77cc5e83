"""The numpy mirror computes the same eval-mode forward as the network, on live parameters."""

import numpy as np
import pytest
import torch
from torch import nn

from qnorm import (
    ConvQNetworkSpec,
    QNetworkSpec,
    QnormError,
    build_q_network,
    conv_preset,
    eval_mode,
    get_norm_kind,
    hard_update,
    learning_mode,
    make_target,
    norm_names,
    q_values,
)
from qnorm.numpy_acting import NumpyActor

# Every kind that can normalize feature maps ("none" included): a new one is tested here too.
MAP_NORMS = tuple(
    n
    for n in norm_names()
    if get_norm_kind(n).factory is None or get_norm_kind(n).map_factory is not None
)
# Non-square, 3 channels: 11x13 -> conv 3 -> 9x11 -> pool 2 -> 4x5 -> conv 2, stride 2 -> 2x2.
SMALL_CONV = {"channels": (4, 8), "kernels": (3, 2), "strides": (1, 2), "pools": (0, 0)}
CHANNELS_FIRST, CHANNELS_LAST = (3, 11, 13), (11, 13, 3)
TORSOS = {
    "no_pool": {"pools": (0, 0)},
    "pool_then_norm": {"pools": (2, 0), "norm_after_pool": True},
    "norm_then_pool": {"pools": (2, 0), "norm_after_pool": False},
}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def trained(spec: QNetworkSpec) -> nn.Module:
    torch.manual_seed(0)
    net = build_q_network(spec)
    net.train()
    with torch.no_grad():
        for _ in range(5):
            net(torch.randn(32, spec.obs_dim) * 3 + 1)
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # affine norm parameters away from 1 and 0
    return net.eval()


def conv_spec(norm="none", channels_last=False, **kw) -> ConvQNetworkSpec:
    shape = CHANNELS_LAST if channels_last else CHANNELS_FIRST
    fields = {"norm": norm, "norm_groups": 2, "channels_last": channels_last, **SMALL_CONV}
    return ConvQNetworkSpec(shape, 5, hidden_sizes=(8,), **{**fields, **kw})


def trained_conv(spec: ConvQNetworkSpec) -> nn.Module:
    """A conv net whose running statistics and affine parameters are not their initial values."""
    torch.manual_seed(0)
    net = build_q_network(spec)
    with learning_mode(net), torch.no_grad():
        for _ in range(3):
            net(torch.randn(16, *spec.obs_shape) * 2 + 1)
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return net


def observations(shape, dtype, n=32, seed=1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype is bool:
        return rng.random((n, *shape)) < 0.3
    if dtype is np.uint8:
        return rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    return (rng.normal(size=(n, *shape)) * 2 + 1).astype(dtype)


def assert_mirrors(actor: NumpyActor, net: nn.Module, obs: np.ndarray) -> None:
    """Q-values and greedy actions equal the eval-mode network's, on a batch and on one state."""
    expected = q_values(net, obs).numpy()
    # Torch's float32 GroupNorm strays up to ~5e-5 from float64 on ReLU'd maps (the mirror
    # less), and sums of thousands of terms round on the scale of the largest Q-value.
    tol = {"rtol": 1e-4, "atol": 1e-5 * max(1.0, float(np.abs(expected).max()))}
    np.testing.assert_allclose(actor.q_values(obs), expected, **tol)
    np.testing.assert_array_equal(actor.greedy(obs), expected.argmax(axis=1))
    np.testing.assert_allclose(actor.q_values(obs[0]), expected[0], **tol)
    np.testing.assert_array_equal(actor.greedy(obs[:1]), expected[:1].argmax(axis=1))


# --- MLP Q-networks -------------------------------------------------------------------------


@pytest.mark.parametrize("norm", norm_names())
@pytest.mark.parametrize("placement", ["before", "after"])
@pytest.mark.parametrize("dueling", [False, True])
@pytest.mark.parametrize("activation", ["relu", "tanh", "silu", "elu"])
def test_mirror_matches_eval_forward(norm, placement, dueling, activation):
    spec = QNetworkSpec(6, 3, (32, 16), activation, norm, placement, True, dueling, norm_groups=2)
    net = trained(spec)
    actor = NumpyActor.mirror(net)
    assert actor is not None
    obs = np.random.default_rng(1).normal(size=(64, 6)).astype(np.float32) * 2
    expected = q_values(net, obs).numpy()
    np.testing.assert_allclose(actor.q_values(obs), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(actor.greedy(obs), expected.argmax(axis=1))
    np.testing.assert_allclose(actor.q_values(obs[0]), expected[0], rtol=1e-4, atol=1e-5)


def test_mirror_follows_in_place_updates_without_refresh():
    net = trained(QNetworkSpec(4, 2, (16,), norm="batchnorm"))
    actor = NumpyActor.mirror(net)
    obs = np.random.default_rng(2).normal(size=(8, 4)).astype(np.float32)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.1)
    net.train()
    net(torch.randn(16, 4)).sum().backward()  # also moves the running statistics
    optimizer.step()
    net.eval()
    np.testing.assert_allclose(actor.q_values(obs), q_values(net, obs).numpy(), atol=1e-5)


def _retrained_state(net: nn.Module) -> dict[str, torch.Tensor]:
    """A state dict with other values than ``net``'s, in fresh tensors."""
    return {k: v + 0.5 if v.is_floating_point() else v.clone() for k, v in net.state_dict().items()}


@pytest.mark.parametrize(
    "change",
    [
        "load_state_dict_assign",  # every tensor replaced by the loaded one
        "data_assignment",  # p.data = ... on one parameter
        "share_memory",  # the storage moves to shared memory, the tensors stay
    ],
)
def test_mirror_follows_a_changed_storage(change):
    net = trained(QNetworkSpec(4, 2, (16, 16), norm="batchnorm"))
    actor = NumpyActor.mirror(net)
    obs = np.random.default_rng(3).normal(size=(8, 4)).astype(np.float32)
    actor.q_values(obs)
    if change == "load_state_dict_assign":
        net.load_state_dict(_retrained_state(net), assign=True)
    elif change == "data_assignment":
        first = net.layers[0]
        first.weight.data = first.weight.data * 2.0 + 0.25
    else:
        net.share_memory()
        with torch.no_grad():  # values written after the move must reach the mirror too
            for p in net.parameters():
                p.mul_(1.5)
    np.testing.assert_allclose(actor.q_values(obs), q_values(net, obs).numpy(), atol=1e-5)


def test_a_mirror_whose_network_moved_out_of_reach_says_so():
    net = trained(QNetworkSpec(4, 2, (8,)))
    actor = NumpyActor.mirror(net)
    net.double()  # float64 tensors: no longer mirrored
    with pytest.raises(QnormError, match="can no longer be mirrored"):
        actor.greedy(np.zeros((1, 4), np.float32))


def test_mirror_declines_what_it_cannot_copy():
    assert NumpyActor.mirror(nn.Sequential(nn.Linear(4, 2))) is None  # not a QNetwork
    assert NumpyActor.mirror(build_q_network(QNetworkSpec(4, 2, (8,), "gelu"))) is None
    assert NumpyActor.mirror(build_q_network(QNetworkSpec(4, 2, (8,))).double()) is None


# --- conv Q-networks ------------------------------------------------------------------------


@pytest.mark.parametrize("norm", MAP_NORMS)
@pytest.mark.parametrize("placement", ["before", "after"])
@pytest.mark.parametrize("torso", TORSOS)
@pytest.mark.parametrize("dueling", [False, True])
def test_conv_mirror_matches_eval_forward(norm, placement, torso, dueling):
    net = trained_conv(conv_spec(norm, placement=placement, dueling=dueling, **TORSOS[torso]))
    actor = NumpyActor.mirror(net)
    assert actor is not None
    assert_mirrors(actor, net, observations(CHANNELS_FIRST, np.float32))


@pytest.mark.parametrize("norm", MAP_NORMS)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [bool, np.uint8, np.float32, np.float64])
def test_conv_mirror_takes_every_input_format(norm, channels_last, dtype):
    scale = 1 / 255 if dtype is np.uint8 else 1.0
    spec = conv_spec(norm, channels_last, pools=(2, 0), obs_scale=scale)
    net = trained_conv(spec)
    assert_mirrors(NumpyActor.mirror(net), net, observations(spec.obs_shape, dtype))


@pytest.mark.parametrize("activation", ["relu", "tanh", "silu", "elu"])
def test_conv_mirror_takes_every_mirrored_activation(activation):
    net = trained_conv(conv_spec("groupnorm", pools=(2, 0), activation=activation))
    assert_mirrors(NumpyActor.mirror(net), net, observations(CHANNELS_FIRST, np.float32))


@pytest.mark.parametrize("norm", ["none", "batchnorm", "layernorm"])
@pytest.mark.parametrize(
    ("preset", "shape", "channels_last", "dtype", "scale"),
    [("minatar", (10, 10, 4), True, bool, 1.0), ("nature", (4, 84, 84), False, np.uint8, 1 / 255)],
)
def test_conv_mirror_acts_like_the_presets(norm, preset, shape, channels_last, dtype, scale):
    fields = {"norm": norm, "channels_last": channels_last, "obs_scale": scale}
    net = trained_conv(ConvQNetworkSpec(shape, 6, **conv_preset(preset), **fields))
    assert_mirrors(NumpyActor.mirror(net), net, observations(shape, dtype, n=8))


def test_conv_mirror_keeps_leading_dimensions():
    net = trained_conv(conv_spec("rmsnorm", True, pools=(2, 0)))
    obs = observations(CHANNELS_LAST, np.float32, n=6).reshape(2, 3, *CHANNELS_LAST)
    with eval_mode(net), torch.no_grad():
        expected = net(torch.as_tensor(obs)).numpy()
    q = NumpyActor.mirror(net).q_values(obs)
    assert q.shape == (2, 3, 5)
    np.testing.assert_allclose(q, expected, rtol=1e-4, atol=1e-5)


def test_conv_mirror_follows_in_place_updates_and_target_syncs():
    online = trained_conv(conv_spec("batchnorm", pools=(2, 0)))
    target = make_target(online)
    online_actor, target_actor = NumpyActor.mirror(online), NumpyActor.mirror(target)
    obs = observations(CHANNELS_FIRST, np.float32, n=8)
    before = online_actor.q_values(obs)
    optimizer = torch.optim.Adam(online.parameters(), lr=0.1)
    with learning_mode(online):  # the step also moves the running statistics
        online(torch.randn(16, *CHANNELS_FIRST)).sum().backward()
    optimizer.step()
    assert not np.allclose(online_actor.q_values(obs), before, atol=1e-3)
    assert_mirrors(online_actor, online, obs)
    np.testing.assert_allclose(target_actor.q_values(obs), before, rtol=1e-6)
    hard_update(target, online)
    assert_mirrors(target_actor, target, obs)


def test_conv_mirror_refuses_an_observation_of_another_shape():
    actor = NumpyActor.mirror(trained_conv(conv_spec()))
    with pytest.raises(QnormError, match="observations of shape"):
        actor.q_values(np.zeros((1, *CHANNELS_LAST), np.float32))


def replaced(index: int, module: nn.Module):
    """A builder of a small conv net whose layer ``index`` is ``module``."""

    def build() -> nn.Module:
        net = build_q_network(conv_spec(pools=(2, 0)))
        net.layers[index] = module
        return net

    return build


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(replaced(0, nn.Conv2d(3, 4, 3, padding=1)), id="padding"),
        pytest.param(replaced(0, nn.Conv2d(3, 4, 3, padding="same")), id="padding_same"),
        pytest.param(replaced(0, nn.Conv2d(3, 4, 2, dilation=2)), id="dilation"),
        pytest.param(replaced(3, nn.Conv2d(4, 8, 2, 2, groups=2)), id="groups"),
        pytest.param(replaced(2, nn.MaxPool2d(2, ceil_mode=True)), id="ceil_mode"),
        pytest.param(replaced(2, nn.MaxPool2d(2, padding=1)), id="pool_padding"),
        pytest.param(replaced(4, nn.BatchNorm2d(8, track_running_stats=False)), id="batch_stats"),
        pytest.param(lambda: build_q_network(conv_spec(activation="gelu")), id="gelu"),
        pytest.param(lambda: build_q_network(conv_spec()).double(), id="float64"),
        pytest.param(lambda: build_q_network(conv_spec()).to("meta"), id="not_cpu"),
    ],
)
def test_conv_mirror_declines_what_it_cannot_copy(build):
    assert NumpyActor.mirror(build()) is None
