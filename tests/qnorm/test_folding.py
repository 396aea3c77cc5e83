"""BatchNorm folding: the folded copy matches the eval-mode original and holds no BatchNorm."""

import numpy as np
import pytest
import torch
from net_state import snapshot
from torch import nn

import qnorm
from qnorm.batchrenorm import BatchRenorm

OBS_DIM, NUM_ACTIONS, HIDDEN = 6, 3, (16, 8)
GROUPS = 2  # divides OBS_DIM and HIDDEN, so groupnorm also fits the input norm
NORMS = qnorm.norm_names()
BatchNormBase = nn.modules.batchnorm._BatchNorm


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.set_num_threads(1)


def build(norm="batchnorm", placement="before", input_norm=False, dueling=False, hidden=HIDDEN):
    torch.manual_seed(0)
    spec = qnorm.QNetworkSpec(
        OBS_DIM,
        NUM_ACTIONS,
        hidden,
        norm=norm,
        placement=placement,
        input_norm=input_norm,
        dueling=dueling,
        norm_groups=GROUPS,
    )
    return qnorm.build_q_network(spec)


def make_nontrivial(net):
    """Train-mode forwards on shifted batches, then perturbed affine params of every norm."""
    dtype = next(net.parameters()).dtype
    with torch.no_grad():
        net.train()
        for _ in range(5):
            net(torch.randn(32, OBS_DIM, dtype=dtype) * 3.0 + 2.0)
        for module in net.modules():
            if isinstance(module, BatchNormBase):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.3)
                assert int(module.num_batches_tracked) == 5
                assert not torch.allclose(
                    module.running_mean, torch.zeros_like(module.running_mean)
                )


def count(net, kind):
    return sum(isinstance(m, kind) for m in net.modules())


def eval_output(net, x):
    with qnorm.eval_mode(net), torch.no_grad():
        return net(x)


@pytest.mark.parametrize(
    ("hidden", "input_norm"), [(HIDDEN, False), (HIDDEN, True), ((), True)]
)  # no hidden layer and no input norm would leave nothing to fold
@pytest.mark.parametrize("dueling", [False, True])
@pytest.mark.parametrize("placement", qnorm.PLACEMENTS)
def test_folded_batchnorm_network_matches_the_original(placement, input_norm, dueling, hidden):
    net = build("batchnorm", placement, input_norm, dueling, hidden)
    make_nontrivial(net)
    net.train()
    before = snapshot(net)
    original_bn = count(net, BatchNormBase)
    assert original_bn == len(hidden) + int(input_norm)

    folded = qnorm.fold_batchnorm(net)

    assert count(folded, BatchNormBase) == 0
    assert count(folded, nn.Linear) == count(net, nn.Linear)
    assert not any(m.training for m in folded.modules())
    assert not any(p.requires_grad for p in folded.parameters())
    for x in (torch.randn(64, OBS_DIM) * 3.0 + 2.0, torch.randn(4, 7, OBS_DIM) * 3.0 + 2.0):
        expected = eval_output(net, x)
        got = folded(x)
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # The original is untouched: same tensors, same modules, same mode.
    for name, tensor in net.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert count(net, BatchNormBase) == original_bn
    assert all(m.training for m in net.modules())


@pytest.mark.parametrize("dueling", [False, True])
@pytest.mark.parametrize(
    "norm", [n for n in NORMS if not qnorm.get_norm_kind(n).uses_batch_statistics]
)
def test_folding_a_network_without_batchnorm_changes_no_output(norm, dueling):
    net = build(norm, "after", input_norm=True, dueling=dueling)
    net.train()
    folded = qnorm.fold_batchnorm(net)
    x = torch.randn(16, OBS_DIM)
    assert torch.equal(folded(x), eval_output(net, x))
    assert [type(m) for m in folded.modules()] == [type(m) for m in net.modules()]
    assert folded is not net


def users_sequential():
    return nn.Sequential(
        nn.BatchNorm1d(OBS_DIM),
        nn.Linear(OBS_DIM, 8),
        nn.BatchNorm1d(8),
        nn.ReLU(),
        nn.Linear(8, 8),
        nn.ReLU(),
        nn.BatchNorm1d(8),
        nn.Linear(8, NUM_ACTIONS),
    )


def test_folding_a_users_plain_sequential():
    net = users_sequential()
    make_nontrivial(net)
    folded = qnorm.fold_batchnorm(net)
    assert count(folded, BatchNormBase) == 0
    x = torch.randn(32, OBS_DIM) * 3.0 + 2.0
    torch.testing.assert_close(folded(x), eval_output(net, x), atol=1e-5, rtol=1e-5)


def test_folding_keeps_dtype():
    net = users_sequential().double()
    make_nontrivial(net)
    folded = qnorm.fold_batchnorm(net)
    assert {p.dtype for p in folded.parameters()} == {torch.float64}
    x = torch.randn(32, OBS_DIM, dtype=torch.float64) * 3.0 + 2.0
    torch.testing.assert_close(folded(x), eval_output(net, x), atol=1e-9, rtol=1e-9)


def test_folding_reaches_nested_sequentials():
    class Body(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                nn.Sequential(nn.Linear(OBS_DIM, 8), nn.BatchNorm1d(8)), nn.ReLU()
            )
            self.out = nn.Linear(8, NUM_ACTIONS)

        def forward(self, x):
            return self.out(self.body(x))

    for net in (Body(), nn.Sequential(Body().body, nn.Linear(8, NUM_ACTIONS))):
        make_nontrivial(net)
        folded = qnorm.fold_batchnorm(net)
        assert count(folded, BatchNormBase) == 0
        x = torch.randn(32, OBS_DIM) * 3.0 + 2.0
        torch.testing.assert_close(folded(x), eval_output(net, x), atol=1e-5, rtol=1e-5)
        assert count(net, BatchNormBase) == 1


def test_folded_network_acts_like_the_original():
    net = build("batchnorm", "after", input_norm=True, dueling=True)
    make_nontrivial(net)
    folded = qnorm.fold_batchnorm(net)
    obs = torch.randn(64, OBS_DIM) * 3.0 + 2.0
    assert (qnorm.greedy_action(folded, obs) == qnorm.greedy_action(net, obs)).all()
    assert qnorm.greedy_action(folded, obs[0]) == qnorm.greedy_action(net, obs[0])


# --- conv networks and feature maps ---------------------------------------------------------

OBS_SHAPE = (3, 12, 12)
# 12x12 -> conv 3 -> 10x10 -> pool 2 -> 5x5 -> conv 2 -> 4x4.
SMALL_CONV = {"channels": (4, 8), "kernels": (3, 2), "strides": (1, 1), "pools": (2, 0)}
BATCH_STAT_NORMS = tuple(n for n in NORMS if qnorm.get_norm_kind(n).uses_batch_statistics)
# Torso norms left unfolded, by (placement, norm_after_pool): a norm between an activation
# or a max-pool on one side and an activation or max-pool on the other has nowhere to go.
UNFOLDABLE_TORSO_NORMS = {
    ("before", False): 0,  # conv, norm, act, pool: into its conv
    ("before", True): 1,  # conv, pool, norm, act: the first block's norm stays
    ("after", False): 1,  # conv, act, norm, pool: the first block's stays; the last goes
    ("after", True): 0,  # conv, act, pool, norm, conv (no padding): into the next conv
}
NormModules = (BatchNormBase, BatchRenorm)


def build_conv(norm, placement, norm_after_pool=False, dueling=False, hidden=(8,), **kw):
    torch.manual_seed(0)
    spec = qnorm.ConvQNetworkSpec(
        OBS_SHAPE,
        NUM_ACTIONS,
        hidden_sizes=hidden,
        norm=norm,
        placement=placement,
        norm_after_pool=norm_after_pool,
        dueling=dueling,
        **{**SMALL_CONV, **kw},
    )
    return qnorm.build_q_network(spec)


def make_maps_nontrivial(net, shape, dtype=torch.float32):
    """Train-mode forwards on shifted batches, then perturbed affine params of every norm."""
    with torch.no_grad():
        net.train()
        for step in range(5):
            net(torch.randn(16, *shape, dtype=dtype) * 3.0 + 2.0 + step)
        for module in net.modules():
            if isinstance(module, NormModules):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.3)
                assert not torch.allclose(
                    module.running_mean, torch.zeros_like(module.running_mean)
                )


@pytest.mark.parametrize("hidden", [(8,), ()])
@pytest.mark.parametrize("norm_target", qnorm.NORM_TARGETS)
@pytest.mark.parametrize("dueling", [False, True])
@pytest.mark.parametrize("norm_after_pool", [False, True])
@pytest.mark.parametrize("placement", qnorm.PLACEMENTS)
@pytest.mark.parametrize("norm", BATCH_STAT_NORMS)
def test_folded_conv_network_matches_the_original(
    norm, placement, norm_after_pool, dueling, norm_target, hidden
):
    net = build_conv(norm, placement, norm_after_pool, dueling, hidden, norm_target=norm_target)
    make_maps_nontrivial(net, OBS_SHAPE)
    before = snapshot(net)
    original = count(net, NormModules)
    torso = 0 if norm_target == "head" else 2
    assert original == torso + (len(hidden) if norm_target != "torso" else 0)

    folded = qnorm.fold_batchnorm(net)

    left = UNFOLDABLE_TORSO_NORMS[(placement, norm_after_pool)] if torso else 0
    assert count(folded, NormModules) == left
    assert count(folded, nn.Conv2d) == 2
    assert count(folded, nn.Linear) == count(net, nn.Linear)
    assert not any(m.training for m in folded.modules())
    assert not any(p.requires_grad for p in folded.parameters())
    for x in (torch.randn(8, *OBS_SHAPE) * 3.0 + 2.0, torch.randn(2, 3, *OBS_SHAPE)):
        expected = eval_output(net, x)
        got = folded(x)
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    for name, tensor in net.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert all(m.training for m in net.modules())


def test_folded_uint8_channels_last_network_acts_like_the_original():
    torch.manual_seed(0)
    spec = qnorm.ConvQNetworkSpec(
        (12, 12, 3),
        NUM_ACTIONS,
        hidden_sizes=(8,),
        norm="batchnorm",
        channels_last=True,
        obs_scale=1 / 255,
        dueling=True,
        **SMALL_CONV,
    )
    net = qnorm.build_q_network(spec)
    make_maps_nontrivial(net, (12, 12, 3))
    folded = qnorm.fold_batchnorm(net)
    assert count(folded, NormModules) == 0
    frames = torch.randint(0, 256, (16, 12, 12, 3), dtype=torch.uint8)
    torch.testing.assert_close(folded(frames), eval_output(net, frames), atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(
        qnorm.greedy_action(folded, frames.numpy()), qnorm.greedy_action(net, frames.numpy())
    )
    assert qnorm.greedy_action(folded, frames[0].numpy()) == qnorm.greedy_action(
        net, frames[0].numpy()
    )


def users_conv_sequential(padding=0, groups=1):
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),  # padding on the output side folds exactly
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.BatchNorm2d(4),
        nn.Conv2d(4, 6, 3, padding=padding, groups=groups, bias=False),
        nn.ReLU(),
        nn.BatchNorm2d(6),
        nn.Flatten(),
        nn.Linear(6 * (10 + 2 * padding) ** 2, NUM_ACTIONS),
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_folding_a_users_conv_sequential(dtype):
    net = users_conv_sequential().to(dtype)
    make_maps_nontrivial(net, OBS_SHAPE, dtype)
    folded = qnorm.fold_batchnorm(net)
    assert count(folded, NormModules) == 0
    assert [type(m) for m in folded] == [
        nn.Conv2d,
        nn.ReLU,
        nn.Conv2d,
        nn.ReLU,
        nn.Flatten,
        nn.Linear,
    ]
    assert {p.dtype for p in folded.parameters()} == {dtype}
    x = torch.randn(8, *OBS_SHAPE, dtype=dtype) * 3.0 + 2.0
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(folded(x), eval_output(net, x), atol=tol, rtol=tol)


@pytest.mark.parametrize(("padding", "groups"), [(1, 1), (0, 2)])
def test_a_norm_before_a_padded_or_grouped_conv_stays(padding, groups):
    net = users_conv_sequential(padding, groups)
    make_maps_nontrivial(net, OBS_SHAPE)
    folded = qnorm.fold_batchnorm(net)
    assert count(folded, NormModules) == 1  # the one in front of that conv
    assert isinstance(folded[2], nn.BatchNorm2d) and isinstance(folded[3], nn.Conv2d)
    x = torch.randn(8, *OBS_SHAPE) * 3.0 + 2.0
    torch.testing.assert_close(folded(x), eval_output(net, x), atol=1e-5, rtol=1e-5)


def test_a_flatten_of_other_dims_keeps_its_norm():
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4), nn.Flatten(0, -1), nn.Linear(400, 2)
    )
    make_maps_nontrivial(nn.Sequential(*net[:3]), OBS_SHAPE)
    folded = qnorm.fold_batchnorm(net)
    assert count(folded, NormModules) == 1
    x = torch.randn(1, *OBS_SHAPE)
    torch.testing.assert_close(folded(x), eval_output(net, x))
