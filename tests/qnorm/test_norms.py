"""Norm kinds: the registry, and normalization of the last dim over all leading dims."""

import pytest
import torch
from net_state import registered
from torch import nn

import qnorm

OBS_DIM, NUM_ACTIONS, HIDDEN = 6, 3, (16, 8)
GROUPS = 2  # divides OBS_DIM and HIDDEN, so groupnorm also fits the input norm
NORMS = qnorm.norm_names()


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.set_num_threads(1)


def build(norm, placement="before", input_norm=False, dueling=False):
    torch.manual_seed(0)
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


# --- 6. [B, F] and [B, T, F] ----------------------------------------------------------------


def test_batchnorm_over_sequences_uses_per_feature_statistics_of_all_rows():
    features = 6
    ours = qnorm.make_norm("batchnorm", features)
    assert isinstance(ours, qnorm.FeatureBatchNorm)
    reference = nn.BatchNorm1d(features)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ours.bias.normal_()
    reference.load_state_dict(ours.state_dict())

    for _ in range(3):
        x = torch.randn(4, 7, features) * torch.arange(1.0, features + 1) + 2.0
        out = ours(x)
        expected = reference(x.reshape(-1, features)).reshape(x.shape)
        assert out.shape == x.shape
        torch.testing.assert_close(out, expected)
    torch.testing.assert_close(ours.running_mean, reference.running_mean)
    torch.testing.assert_close(ours.running_var, reference.running_var)
    assert int(ours.num_batches_tracked) == int(reference.num_batches_tracked) == 3
    # The running stats really are statistics over the B*T rows, not over B or T alone.
    assert not torch.allclose(ours.running_mean, torch.zeros(features))

    ours.eval()
    reference.eval()
    x = torch.randn(2, 5, features)
    torch.testing.assert_close(ours(x), reference(x.reshape(-1, features)).reshape(x.shape))


def test_batchnorm_over_sequences_normalizes_each_feature_over_batch_and_time():
    norm = qnorm.make_norm("batchnorm", 3)
    x = torch.randn(8, 5, 3) * torch.tensor([1.0, 10.0, 100.0]) + torch.tensor([5.0, -3.0, 7.0])
    out = norm(x)
    torch.testing.assert_close(out.mean(dim=(0, 1)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        out.var(dim=(0, 1), unbiased=False), torch.ones(3), atol=1e-3, rtol=0
    )


def reference_row_norm(kind, x):
    if kind == "layernorm":
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, unbiased=False, keepdim=True)
        return (x - mean) / torch.sqrt(var + 1e-5)
    eps = torch.finfo(x.dtype).eps
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)


@pytest.mark.parametrize("shape", [(4, 6), (4, 7, 6), (6,)])
@pytest.mark.parametrize("kind", ["layernorm", "rmsnorm"])
def test_row_norms_normalize_the_last_dim(kind, shape):
    norm = qnorm.make_norm(kind, shape[-1])
    x = torch.randn(shape) * 3.0 + 1.0
    for mode in (True, False):
        norm.train(mode)
        out = norm(x)
        assert out.shape == x.shape
        torch.testing.assert_close(out, reference_row_norm(kind, x), atol=1e-5, rtol=1e-5)
    flat = norm(x.reshape(-1, shape[-1])).reshape(shape)
    torch.testing.assert_close(norm(x), flat)


def test_none_inserts_no_module():
    assert qnorm.make_norm("none", 4) is None
    net = build("none", input_norm=True)
    types = {type(m) for m in net.modules()}
    assert types <= {qnorm.QNetwork, nn.Sequential, nn.Linear, nn.ReLU}


@pytest.mark.parametrize("input_norm", [False, True])
@pytest.mark.parametrize("placement", qnorm.PLACEMENTS)
@pytest.mark.parametrize("norm", NORMS)
def test_every_kind_handles_vectors_and_sequences_through_a_network(norm, placement, input_norm):
    net = build(norm, placement, input_norm, dueling=True)
    # Train mode: batch statistics over all B*T rows, the same as the flattened batch.
    seq = torch.randn(4, 6, OBS_DIM) * 2.0 + 1.0
    flat_net = build(norm, placement, input_norm, dueling=True)
    with qnorm.learning_mode(net), qnorm.learning_mode(flat_net):
        out_seq = net(seq)
        out_flat = flat_net(seq.reshape(-1, OBS_DIM))
        out_vec = net(seq[:, 0])
    assert out_seq.shape == (4, 6, NUM_ACTIONS)
    assert out_vec.shape == (4, NUM_ACTIONS)
    torch.testing.assert_close(out_seq.reshape(-1, NUM_ACTIONS), out_flat)
    out_seq.sum().backward()
    assert net.layers.linear1.weight.grad is not None
    # Eval mode: every row is normalized on its own.
    with qnorm.eval_mode(net), torch.no_grad():
        eval_seq = net(seq)
        eval_rows = net(seq.reshape(-1, OBS_DIM))
    assert eval_seq.shape == (4, 6, NUM_ACTIONS)
    torch.testing.assert_close(eval_seq.reshape(-1, NUM_ACTIONS), eval_rows)
    assert torch.isfinite(eval_seq).all()


# --- 8. the registry ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [lambda: qnorm.QNetworkSpec(4, 2, norm="groupnrom"), lambda: qnorm.make_norm("groupnrom", 4)],
)
def test_unknown_norm_lists_the_known_ones(make):
    with pytest.raises(qnorm.QnormError, match="groupnrom") as info:
        make()
    for name in ("none", "batchnorm", "layernorm", "rmsnorm"):
        assert name in str(info.value)


def test_get_norm_kind():
    kind = qnorm.get_norm_kind("batchnorm")
    assert kind.name == "batchnorm"
    assert kind.uses_batch_statistics
    assert not qnorm.get_norm_kind("layernorm").uses_batch_statistics
    assert qnorm.get_norm_kind("none").factory is None


class ScaleNorm(nn.Module):
    """A user's own row norm: x scaled to a learned norm."""

    def __init__(self, num_features):
        super().__init__()
        self.num_features = num_features
        self.gain = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return self.gain * x / x.norm(dim=-1, keepdim=True).clamp_min(1e-6)


def test_register_norm_adds_a_kind_in_one_call():
    with registered("scalenorm", ScaleNorm):
        assert "scalenorm" in qnorm.norm_names()
        net = build("scalenorm", "after", input_norm=True)
        assert isinstance(net.layers.norm1, ScaleNorm)
        assert net.layers.norm1.num_features == HIDDEN[0]
        assert isinstance(net.layers.input_norm, ScaleNorm)
        assert net.layers.linear1.bias is not None
        assert not qnorm.has_batch_statistics(net)
        qnorm.check_train_batch_size(net, 1)
        assert type(qnorm.greedy_action(net, torch.randn(OBS_DIM))) is int
        spec = qnorm.QNetworkSpec.from_dict(net.spec.to_dict())
        assert spec == net.spec
    assert "scalenorm" not in qnorm.norm_names()
    with pytest.raises(qnorm.QnormError, match="unknown norm"):
        build("scalenorm")


class GhostBatchNorm(nn.Module):
    """A user's batch-statistics norm that is not a torch BatchNorm subclass."""

    uses_batch_statistics = True

    def __init__(self, num_features):
        super().__init__()
        self.inner = nn.BatchNorm1d(num_features, affine=False)

    def forward(self, x):
        return self.inner(x)


def test_registered_batch_statistics_kind_gets_the_batchnorm_rules():
    with registered("ghostbn", GhostBatchNorm, uses_batch_statistics=True):
        net = build("ghostbn", "before")
        assert net.layers.linear1.bias is None
        assert net.layers.linear2.bias is None
        assert net.layers.q_head.bias is not None
        assert qnorm.is_batch_statistics_module(net.layers.norm1)
        with pytest.raises(qnorm.QnormError):
            qnorm.check_train_batch_size(net, 1)
    assert "ghostbn" not in qnorm.norm_names()


def test_is_batch_statistics_module():
    assert qnorm.is_batch_statistics_module(nn.BatchNorm1d(3))
    assert qnorm.is_batch_statistics_module(nn.BatchNorm2d(3))
    assert qnorm.is_batch_statistics_module(qnorm.FeatureBatchNorm(3))
    assert qnorm.is_batch_statistics_module(GhostBatchNorm(3))
    assert not qnorm.is_batch_statistics_module(nn.LayerNorm(3))
    assert not qnorm.is_batch_statistics_module(nn.RMSNorm(3))
    assert not qnorm.is_batch_statistics_module(nn.Linear(3, 3))


# --- feature maps [N, C, H, W] and groupnorm ------------------------------------------------

MAP_NORMS = tuple(n for n in NORMS if n != "none")


def test_every_kind_but_none_has_a_map_form():
    assert "groupnorm" in NORMS
    for name in MAP_NORMS:
        assert qnorm.get_norm_kind(name).map_factory is not None, name
    assert qnorm.make_norm("none", 4, feature_maps=True) is None


def perturbed(norm):
    """``norm`` with its affine parameters away from 1 and 0, so a lost affine shows."""
    with torch.no_grad():
        for name, p in norm.named_parameters():
            p.copy_(torch.randn_like(p) * 0.3 + (1.0 if name == "weight" else 0.0))
    return norm


def maps(shape=(4, 6, 5, 3), seed=1):
    g = torch.Generator().manual_seed(seed)
    scale = torch.arange(1.0, shape[1] + 1).reshape(1, -1, 1, 1)
    return torch.randn(shape, generator=g) * scale + 2.0


def test_batchnorm_on_maps_is_batchnorm2d():
    ours = perturbed(qnorm.make_norm("batchnorm", 6, feature_maps=True))
    reference = nn.BatchNorm2d(6)
    reference.load_state_dict(ours.state_dict())
    for step in range(3):
        x = maps(seed=step)
        torch.testing.assert_close(ours(x), reference(x))
    torch.testing.assert_close(ours.running_mean, reference.running_mean)
    torch.testing.assert_close(ours.running_var, reference.running_var)
    ours.eval()
    reference.eval()
    torch.testing.assert_close(ours(maps(seed=9)), reference(maps(seed=9)))


def channel_rows(x):
    return x.movedim(1, -1).reshape(-1, x.shape[1])


def from_channel_rows(rows, shape):
    n, c, h, w = shape
    return rows.reshape(n, h, w, c).movedim(-1, 1)


@pytest.mark.parametrize("warmup", [0, 100])
def test_batchrenorm_on_maps_is_batchrenorm_of_each_channel_over_n_h_w(warmup):
    ours = perturbed(qnorm.batchrenorm.BatchRenorm(6, warmup_steps=warmup))
    on_maps = qnorm.make_norm("batchrenorm", 6, feature_maps=True)
    on_maps.warmup_steps = warmup
    on_maps.load_state_dict(ours.state_dict())
    assert isinstance(on_maps, qnorm.batchrenorm.BatchRenorm)
    for step in range(4):
        x = maps(seed=step) + step
        expected = from_channel_rows(ours(channel_rows(x)), x.shape)
        torch.testing.assert_close(on_maps(x), expected)
    for name, tensor in ours.state_dict().items():
        torch.testing.assert_close(on_maps.state_dict()[name], tensor)
    assert int(on_maps.num_batches_tracked) == 4
    if warmup:  # during warm-up it is BatchNorm2d with BatchRenorm's momentum and eps
        reference = nn.BatchNorm2d(6, eps=ours.eps, momentum=ours.momentum)
        unbiased = {"unbiased_running_var": True}  # torch's running variance
        fresh = qnorm.make_norm("batchrenorm", 6, feature_maps=True, options=unbiased)
        reference.load_state_dict(fresh.state_dict())
        x = maps(seed=5)
        torch.testing.assert_close(fresh(x), reference(x))
        torch.testing.assert_close(fresh.running_var, reference.running_var)
    on_maps.eval()
    ours.eval()
    x = maps(seed=6)
    torch.testing.assert_close(on_maps(x), from_channel_rows(ours(channel_rows(x)), x.shape))


def per_channel(t):
    return t.reshape(1, -1, 1, 1)


def reference_map_norm(kind, norm, x):
    """Each sample normalized over (C, H, W) or its channel groups, then a per-channel affine."""
    n = x.shape[0]
    groups = norm.num_groups if kind == "groupnorm" else 1
    rows = x.reshape(n, groups, -1)
    if kind == "rmsnorm":
        y = rows * torch.rsqrt(rows.pow(2).mean(dim=-1, keepdim=True) + torch.finfo(x.dtype).eps)
        return y.reshape(x.shape) * per_channel(norm.weight)
    mean = rows.mean(dim=-1, keepdim=True)
    var = rows.var(dim=-1, unbiased=False, keepdim=True)
    y = ((rows - mean) / torch.sqrt(var + 1e-5)).reshape(x.shape)
    return y * per_channel(norm.weight) + per_channel(norm.bias)


@pytest.mark.parametrize("kind", ["layernorm", "rmsnorm", "groupnorm"])
def test_per_sample_kinds_on_maps_normalize_each_sample_over_c_h_w(kind):
    norm = perturbed(qnorm.make_norm(kind, 6, feature_maps=True, groups=3))
    assert norm.weight.shape == (6,)  # the affine is per channel, not per position
    x = maps()
    for mode in (True, False):
        norm.train(mode)
        out = norm(x)
        torch.testing.assert_close(out, reference_map_norm(kind, norm, x), atol=1e-5, rtol=1e-5)
    # Each sample on its own: a batch of one, in train mode too.
    norm.train()
    torch.testing.assert_close(norm(x[1:2]), out[1:2], atol=1e-6, rtol=1e-6)


def test_groupnorm_on_maps_uses_the_group_count():
    norm = qnorm.make_norm("groupnorm", 6, feature_maps=True, groups=3)
    assert isinstance(norm, nn.GroupNorm) and norm.num_groups == 3
    reference = nn.GroupNorm(3, 6)
    x = maps()
    torch.testing.assert_close(norm(x), reference(x))
    assert not torch.allclose(norm(x), nn.GroupNorm(1, 6)(x))


@pytest.mark.parametrize("shape", [(4, 8), (4, 7, 8), (8,)])
def test_groupnorm_on_vectors_normalizes_groups_of_the_last_dim(shape):
    norm = perturbed(qnorm.make_norm("groupnorm", 8, groups=2))
    assert isinstance(norm, qnorm.FeatureGroupNorm)
    x = torch.randn(shape) * 3.0 + 1.0
    rows = x.reshape(-1, 2, 4)
    mean = rows.mean(dim=-1, keepdim=True)
    var = rows.var(dim=-1, unbiased=False, keepdim=True)
    expected = ((rows - mean) / torch.sqrt(var + 1e-5)).reshape(shape) * norm.weight + norm.bias
    for mode in (True, False):
        norm.train(mode)
        torch.testing.assert_close(norm(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("feature_maps", [False, True])
def test_groupnorm_width_not_divisible_by_the_groups_is_a_qnorm_error(feature_maps):
    with pytest.raises(qnorm.QnormError, match="4 groups cannot split a width of 6"):
        qnorm.make_norm("groupnorm", 6, feature_maps=feature_maps, groups=4)
    with pytest.raises(qnorm.QnormError, match="0 groups"):
        qnorm.make_norm("groupnorm", 6, feature_maps=feature_maps, groups=0)


def test_mlp_spec_checks_the_group_count_against_every_normalized_width():
    with pytest.raises(qnorm.QnormError, match="width of 6"):
        qnorm.QNetworkSpec(6, 2, (8,), norm="groupnorm", norm_groups=4, input_norm=True)
    with pytest.raises(qnorm.QnormError, match="width of 6"):
        qnorm.QNetworkSpec(4, 2, (8, 6), norm="groupnorm", norm_groups=4)
    with pytest.raises(qnorm.QnormError, match="norm_groups"):
        qnorm.QNetworkSpec(4, 2, (8,), norm_groups=0)
    qnorm.QNetworkSpec(6, 2, (8,), norm="groupnorm", norm_groups=4)  # the input is not normalized
    qnorm.QNetworkSpec(6, 2, (8,), norm="layernorm", norm_groups=5)  # no groups: unused
    net = qnorm.build_q_network(
        qnorm.QNetworkSpec(4, 2, (8,), norm="groupnorm", norm_groups=4, input_norm=True)
    )
    assert net.layers.input_norm.num_groups == 4 and net.layers.norm1.num_groups == 4


def test_groups_go_only_to_kinds_that_take_them():
    seen = []

    def factory(num_features, **kwargs):
        seen.append(kwargs)
        return nn.Identity()

    with registered("takes", factory, takes_groups=True), registered("plain", factory):
        qnorm.make_norm("takes", 6, groups=3)
        qnorm.make_norm("plain", 6, groups=3)
    assert seen == [{"groups": 3}, {}]


def test_a_kind_without_a_map_form_on_maps_is_a_qnorm_error_naming_it():
    with registered("scalenorm", ScaleNorm):
        assert isinstance(qnorm.make_norm("scalenorm", 4), ScaleNorm)
        with pytest.raises(qnorm.QnormError, match="'scalenorm' has no form for feature maps"):
            qnorm.make_norm("scalenorm", 4, feature_maps=True)


@pytest.mark.parametrize("kind", MAP_NORMS)
def test_every_map_form_keeps_the_shape_and_acts_per_sample_in_eval_mode(kind):
    norm = perturbed(qnorm.make_norm(kind, 6, feature_maps=True, groups=2))
    x = maps()
    with torch.no_grad():
        out = norm(x)  # train mode
        assert out.shape == x.shape
        norm.eval()
        before = {k: v.clone() for k, v in norm.state_dict().items()}
        batch = norm(x)
        alone = torch.cat([norm(x[i : i + 1]) for i in range(x.shape[0])])
    torch.testing.assert_close(batch, alone)
    assert all(torch.equal(before[k], v) for k, v in norm.state_dict().items())
    assert qnorm.is_batch_statistics_module(norm) is qnorm.get_norm_kind(kind).uses_batch_statistics


@pytest.mark.parametrize(
    "kind", [n for n in MAP_NORMS if qnorm.get_norm_kind(n).uses_batch_statistics]
)
def test_batch_statistics_map_forms_refuse_a_train_batch_of_one(kind):
    norm = qnorm.make_norm(kind, 6, feature_maps=True)
    before = {k: v.clone() for k, v in norm.state_dict().items()}
    with pytest.raises(qnorm.QnormError, match="batch of one"):
        norm(maps((1, 6, 5, 3)))  # 15 positions, but one sample
    assert all(torch.equal(before[k], v) for k, v in norm.state_dict().items())
    norm.eval()
    assert norm(maps((1, 6, 5, 3))).shape == (1, 6, 5, 3)


@pytest.mark.parametrize("kind", ["batchnorm", "batchrenorm"])
def test_a_spec_sets_the_momentum_of_batch_statistics_norms_only(kind):
    from qnorm import QNetworkSpec, build_q_network

    net = build_q_network(QNetworkSpec(4, 2, (8, 8), norm=kind, norm_momentum=0.01))
    norms = [m for m in net.modules() if hasattr(m, "running_mean")]
    assert len(norms) == 2 and all(m.momentum == 0.01 for m in norms)
    default = build_q_network(QNetworkSpec(4, 2, (8,), norm=kind))
    assert [m.momentum for m in default.modules() if hasattr(m, "running_mean")] == [
        0.1 if kind == "batchnorm" else 0.01
    ]
    layer = build_q_network(QNetworkSpec(4, 2, (8,), norm="layernorm", norm_momentum=0.01))
    assert isinstance(layer, torch.nn.Module)  # no momentum to set: accepted and unused
    with pytest.raises(qnorm.QnormError, match="norm_momentum"):
        QNetworkSpec(4, 2, (8,), norm=kind, norm_momentum=1.5)


def test_conv_specs_pass_the_momentum_to_feature_map_norms():
    from qnorm import ConvQNetworkSpec, build_q_network

    spec = ConvQNetworkSpec(
        obs_shape=(10, 10, 4),
        num_actions=3,
        channels=(8,),
        kernels=(3,),
        strides=(1,),
        pools=(0,),
        hidden_sizes=(16,),
        norm="batchnorm",
        norm_momentum=0.05,
        channels_last=True,
    )
    net = build_q_network(spec)
    assert [m.momentum for m in net.modules() if hasattr(m, "running_mean")] == [0.05, 0.05]
    assert type(spec).from_dict(spec.to_dict()) == spec
