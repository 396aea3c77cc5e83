"""The mode rules: acting never touches running statistics, and every switch is scoped."""

import contextlib

import numpy as np
import pytest
import torch
from net_state import assert_same_state, modes, snapshot
from torch import nn

import qnorm

OBS_DIM, NUM_ACTIONS, HIDDEN = 6, 3, (16, 8)
GROUPS = 2  # divides OBS_DIM and HIDDEN, so groupnorm also fits the input norm
NORMS = qnorm.norm_names()
BATCH_STAT_NORMS = tuple(
    n for n in qnorm.norm_names() if qnorm.get_norm_kind(n).uses_batch_statistics
)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.set_num_threads(1)


def build(norm="batchnorm", placement="before", input_norm=False, dueling=False, seed=0):
    torch.manual_seed(seed)
    spec = qnorm.QNetworkSpec(
        OBS_DIM,
        NUM_ACTIONS,
        HIDDEN,
        norm=norm,
        placement=placement,
        input_norm=input_norm,
        dueling=dueling,
        norm_groups=GROUPS,
    )
    return qnorm.build_q_network(spec)


def warm_up(net, steps=4, batch=32):
    """A few train-mode forwards so running statistics are not their initial values."""
    with qnorm.learning_mode(net), torch.no_grad():
        for _ in range(steps):
            net(torch.randn(batch, OBS_DIM) * 2.0 + 1.0)


def make_obs(kind, shape):
    data = np.random.default_rng(1).normal(size=shape)
    if kind == "numpy32":
        return data.astype(np.float32)
    if kind == "numpy64":
        return data
    return torch.as_tensor(data, dtype=torch.float32)


def test_every_documented_kind_is_registered():
    assert {"none", "batchnorm", "layernorm", "rmsnorm"} <= set(NORMS)


# --- 1. acting on one observation or a batch ------------------------------------------------


@pytest.mark.parametrize("obs_kind", ["numpy32", "numpy64", "tensor"])
@pytest.mark.parametrize("input_norm", [False, True])
@pytest.mark.parametrize("placement", qnorm.PLACEMENTS)
@pytest.mark.parametrize("norm", NORMS)
def test_acting_on_one_unbatched_observation(norm, placement, input_norm, obs_kind):
    net = build(norm, placement, input_norm)
    warm_up(net)
    net.train()  # the dangerous case: the caller left the network in train mode
    before, before_modes = snapshot(net), modes(net)
    obs = make_obs(obs_kind, (OBS_DIM,))

    action = qnorm.greedy_action(net, obs)
    values = qnorm.q_values(net, obs)

    assert type(action) is int
    assert 0 <= action < NUM_ACTIONS
    assert values.shape == (NUM_ACTIONS,)
    assert action == int(values.argmax())
    assert_same_state(before, net)
    assert modes(net) == before_modes
    # Acting used eval-mode (running) statistics.
    with qnorm.eval_mode(net), torch.no_grad():
        expected = net(torch.as_tensor(np.asarray(obs), dtype=torch.float32)[None])[0]
    torch.testing.assert_close(values, expected)
    assert_same_state(before, net)


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("obs_kind", ["numpy32", "tensor"])
@pytest.mark.parametrize("input_norm", [False, True])
@pytest.mark.parametrize("placement", qnorm.PLACEMENTS)
@pytest.mark.parametrize("norm", NORMS)
def test_acting_on_a_batch(norm, placement, input_norm, obs_kind, batch):
    net = build(norm, placement, input_norm)
    warm_up(net)
    before, before_modes = snapshot(net), modes(net)
    obs = make_obs(obs_kind, (batch, OBS_DIM))

    actions = qnorm.greedy_action(net, obs)
    values = qnorm.q_values(net, obs)

    assert isinstance(actions, np.ndarray)
    assert actions.dtype == np.int64
    assert actions.shape == (batch,)
    assert values.shape == (batch, NUM_ACTIONS)
    np.testing.assert_array_equal(actions, values.argmax(dim=-1).numpy())
    assert ((actions >= 0) & (actions < NUM_ACTIONS)).all()
    assert_same_state(before, net)
    assert modes(net) == before_modes


@pytest.mark.parametrize("norm", NORMS)
def test_forward_inside_acting_mode_changes_no_buffer(norm):
    net = build(norm, input_norm=True)
    warm_up(net)
    before = snapshot(net)
    with qnorm.acting_mode(net) as acting:
        assert acting is net
        assert torch.is_inference_mode_enabled()
        out = net(torch.randn(OBS_DIM))
        out_one = net(torch.randn(1, OBS_DIM))
    assert out.shape == (NUM_ACTIONS,)
    assert out_one.shape == (1, NUM_ACTIONS)
    assert_same_state(before, net)


@pytest.mark.parametrize("shape", [(), (2, 3, OBS_DIM), (1, 1, 1, OBS_DIM)])
@pytest.mark.parametrize("norm", NORMS)
def test_observation_with_wrong_dims_is_a_qnorm_error(norm, shape):
    net = build(norm)
    before = snapshot(net)
    obs = np.zeros(shape, dtype=np.float32)
    with pytest.raises(qnorm.QnormError, match="expected one observation"):
        qnorm.greedy_action(net, obs)
    with pytest.raises(qnorm.QnormError, match="expected one observation"):
        qnorm.q_values(net, torch.as_tensor(obs))
    assert_same_state(before, net)
    assert net.training


# --- 2. scoped modes restore every submodule's previous mode ---------------------------------

CONTEXTS = {
    "acting_mode": (qnorm.acting_mode, False),
    "eval_mode": (qnorm.eval_mode, False),
    "learning_mode": (qnorm.learning_mode, True),
}


def mixed_mode_net(start):
    net = build("batchnorm", placement="after", input_norm=True, dueling=True)
    if start == "train_with_eval_children":
        net.train()
        net.layers.norm1.eval()
        net.head.value.eval()
    else:
        net.eval()
        net.layers.input_norm.train()
        net.head.advantage.train()
    return net


@pytest.mark.parametrize("raises", [False, True])
@pytest.mark.parametrize("start", ["train_with_eval_children", "eval_with_train_children"])
@pytest.mark.parametrize("context", list(CONTEXTS))
def test_scoped_mode_restores_every_submodule(context, start, raises):
    scoped, training = CONTEXTS[context]
    net = mixed_mode_net(start)
    before_modes = modes(net)
    assert len(set(before_modes)) == 2  # really mixed

    body_ran = False
    guard = pytest.raises(RuntimeError, match="boom") if raises else contextlib.nullcontext()
    with guard, scoped(net):
        assert all(m.training is training for m in net.modules())
        body_ran = True
        if raises:
            raise RuntimeError("boom")

    assert body_ran
    assert modes(net) == before_modes


@pytest.mark.parametrize("context", list(CONTEXTS))
def test_scoped_modes_restore_on_a_users_plain_network(context):
    scoped, training = CONTEXTS[context]
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    net[1].eval()
    before_modes = modes(net)
    with pytest.raises(KeyError), scoped(net):
        assert all(m.training is training for m in net.modules())
        raise KeyError("x")
    assert modes(net) == before_modes


def test_nested_scopes_restore_in_order():
    net = build("batchnorm")
    net.train()
    with qnorm.learning_mode(net):
        with qnorm.acting_mode(net):
            assert not any(modes(net))
        assert all(modes(net))
        with qnorm.eval_mode(net):
            assert not any(modes(net))
        assert all(modes(net))
    assert all(modes(net))


def test_eval_mode_keeps_gradients_and_running_stats():
    net = build("batchnorm")
    warm_up(net)
    before = snapshot(net)
    with qnorm.eval_mode(net):
        assert torch.is_grad_enabled()
        assert not torch.is_inference_mode_enabled()
        out = net(torch.randn(1, OBS_DIM))
    assert out.requires_grad
    out.sum().backward()
    assert net.layers.linear1.weight.grad is not None
    assert_same_state(before, net)


def test_learning_mode_updates_running_stats_once_per_forward():
    net = build("batchnorm")
    net.eval()
    norm = net.layers.norm1
    mean_before = norm.running_mean.clone()
    with qnorm.learning_mode(net):
        net(torch.randn(8, OBS_DIM) + 3.0)
    assert int(norm.num_batches_tracked) == 1
    assert not torch.equal(norm.running_mean, mean_before)
    assert not net.training


# --- 3. BatchNorm and a batch of one --------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 6), (6,), (1, 1, 6)])
def test_train_mode_batchnorm_on_one_sample_is_a_clear_error(shape):
    norm = qnorm.make_norm("batchnorm", 6)
    norm.train()
    before = snapshot(norm)
    with pytest.raises(qnorm.QnormError, match="batch of one"):
        norm(torch.randn(shape))
    assert_same_state(before, norm)


@pytest.mark.parametrize("shape", [(1, OBS_DIM), (OBS_DIM,)])
@pytest.mark.parametrize("input_norm", [False, True])
@pytest.mark.parametrize("placement", qnorm.PLACEMENTS)
def test_train_mode_batchnorm_network_on_one_sample_is_a_clear_error(placement, input_norm, shape):
    net = build("batchnorm", placement, input_norm)
    before = snapshot(net)
    with pytest.raises(qnorm.QnormError, match="batch of one"), qnorm.learning_mode(net):
        net(torch.randn(shape))
    assert_same_state(before, net)


@pytest.mark.parametrize("input_norm", [False, True])
@pytest.mark.parametrize("placement", qnorm.PLACEMENTS)
@pytest.mark.parametrize("norm", NORMS)
def test_check_train_batch_size(norm, placement, input_norm):
    net = build(norm, placement, input_norm)
    assert qnorm.has_batch_statistics(net) is (norm in BATCH_STAT_NORMS)
    if norm in BATCH_STAT_NORMS:
        with pytest.raises(qnorm.QnormError, match="batch size 1"):
            qnorm.check_train_batch_size(net, 1)
    else:
        qnorm.check_train_batch_size(net, 1)
    qnorm.check_train_batch_size(net, 2)


def test_acting_on_a_users_own_batchnorm_network():
    net = nn.Sequential(
        nn.Linear(OBS_DIM, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, NUM_ACTIONS)
    )
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(16, OBS_DIM))
    net.train()
    before = snapshot(net)
    assert int(net[1].num_batches_tracked) == 3

    obs = np.random.default_rng(0).normal(size=OBS_DIM).astype(np.float32)
    action = qnorm.greedy_action(net, obs)
    values = qnorm.q_values(net, obs)
    actions = qnorm.greedy_action(net, obs[None])

    assert type(action) is int
    assert values.shape == (NUM_ACTIONS,)
    assert action == int(values.argmax())
    assert actions.dtype == np.int64 and actions.tolist() == [action]
    assert_same_state(before, net)
    assert all(modes(net))
    assert qnorm.has_batch_statistics(net)
    with pytest.raises(qnorm.QnormError):
        qnorm.check_train_batch_size(net, 1)


class _CountsTrainCalls(nn.Module):
    """A module with its own train(), which the scoped modes must call rather than bypass."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2)
        self.calls: list[bool] = []

    def train(self, mode: bool = True):
        self.calls.append(mode)
        return super().train(mode)

    def forward(self, x):
        return self.linear(x)


def test_custom_train_override_runs_on_switch_and_restore():
    net = nn.Sequential(_CountsTrainCalls(), nn.BatchNorm1d(2))
    net.train()
    net[1].eval()  # mixed modes must come back exactly
    custom = net[0]
    custom.calls.clear()
    with qnorm.acting_mode(net):
        assert not custom.training and not net[1].training
    assert custom.calls[0] is False and custom.calls[-1] is True
    assert net.training and custom.training and not net[1].training


# --- images: a user's conv network, and the observation dims of any module -------------------

IMAGE = (3, 8, 8)


def users_conv_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, NUM_ACTIONS),
    )


@pytest.mark.parametrize("dtype", [np.uint8, np.bool_, np.float64])
def test_acting_on_one_image_with_a_users_conv_batchnorm_network(dtype):
    net = users_conv_net()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(8, *IMAGE) * 255)
    net.train()
    before, before_modes = snapshot(net), modes(net)
    image = (np.random.default_rng(0).random(IMAGE) * 255).astype(dtype)

    action = qnorm.greedy_action(net, image)
    values = qnorm.q_values(net, image)
    actions = qnorm.greedy_action(net, np.stack([image, image]))

    assert type(action) is int
    assert values.shape == (NUM_ACTIONS,) and values.dtype == torch.float32
    assert action == int(values.argmax())
    assert actions.dtype == np.int64 and actions.tolist() == [action, action]
    # An integer or bool image reached the user's module as its float dtype, unscaled.
    with qnorm.eval_mode(net), torch.no_grad():
        expected = net(torch.as_tensor(image.astype(np.float32))[None])[0]
    torch.testing.assert_close(values, expected)
    assert_same_state(before, net)
    assert modes(net) == before_modes
    with pytest.raises(qnorm.QnormError, match="expected one observation with 3 dims"):
        qnorm.greedy_action(net, image[0])


def test_integer_observations_reach_a_users_float64_module_as_float64():
    net = nn.Sequential(nn.Linear(OBS_DIM, NUM_ACTIONS)).double()
    obs = np.arange(OBS_DIM, dtype=np.int64)
    values = qnorm.q_values(net, obs)
    assert values.dtype == torch.float64
    torch.testing.assert_close(values, net(torch.arange(OBS_DIM, dtype=torch.float64)).detach())


def test_qnorm_networks_receive_integer_observations_raw():
    seen = []
    net = build("none")
    net.register_forward_pre_hook(lambda _, args: seen.append(args[0].dtype))
    qnorm.q_values(net, np.arange(OBS_DIM, dtype=np.int64))
    qnorm.q_values(net, np.arange(OBS_DIM, dtype=np.float64))
    assert seen == [torch.int64, torch.float32]


class _NoLayers(nn.Module):
    def forward(self, x):
        return x


class _DeclaresDims(nn.Module):
    obs_ndim = 2

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 2)


@pytest.mark.parametrize(
    ("make", "ndim"),
    [
        (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 2)), 3),
        (lambda: nn.Sequential(nn.Conv1d(3, 4, 3), nn.Flatten(), nn.Linear(4, 2)), 2),
        (lambda: nn.Sequential(nn.LayerNorm(4), nn.Linear(4, 2)), 1),
        (_NoLayers, 1),
        (_DeclaresDims, 2),  # a declared obs_ndim wins over the first layer
        (lambda: build("batchnorm"), 1),
    ],
)
def test_observation_ndim_comes_from_obs_ndim_or_the_first_input_layer(make, ndim):
    assert qnorm.observation_ndim(make()) == ndim


def test_acting_with_a_users_conv1d_network_on_one_sequence():
    net = nn.Sequential(nn.Conv1d(2, 4, 3), nn.BatchNorm1d(4), nn.Flatten(), nn.Linear(12, 3))
    net.train()
    before = snapshot(net)
    assert type(qnorm.greedy_action(net, np.zeros((2, 5), dtype=np.float32))) is int
    assert qnorm.q_values(net, np.zeros((4, 2, 5), dtype=np.float32)).shape == (4, 3)
    assert_same_state(before, net)


# --- 4. Batch statistics without learning (a lagged copy in the joint update) --------------


@pytest.mark.parametrize("norm", BATCH_STAT_NORMS)
def test_batch_statistics_mode_normalizes_as_training_does_and_changes_no_buffer(norm):
    net = build(norm, input_norm=True)
    warm_up(net)
    net.eval()
    before, before_modes = snapshot(net), modes(net)
    batch = torch.randn(12, OBS_DIM) * 3.0 - 1.0
    with qnorm.batch_statistics_mode(net):
        assert all(modes(net)) and not torch.is_grad_enabled()
        out = net(batch)
    assert not out.requires_grad
    assert_same_state(before, net)  # running statistics and step counters as they were
    assert modes(net) == before_modes
    with qnorm.learning_mode(net), torch.no_grad():
        expected = net(batch)  # the train-mode forward, which does update the buffers
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    with qnorm.eval_mode(net), torch.no_grad():
        assert not torch.equal(net(batch), out)  # really batch statistics, not running ones


def test_batch_statistics_mode_restores_buffers_when_the_body_raises():
    net = build("batchrenorm")
    warm_up(net)
    net.eval()
    before = snapshot(net)
    with pytest.raises(RuntimeError, match="boom"), qnorm.batch_statistics_mode(net):
        net(torch.randn(8, OBS_DIM))
        raise RuntimeError("boom")
    assert_same_state(before, net)
    assert not any(modes(net))
