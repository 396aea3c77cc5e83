"""Norm kinds: the registry, and normalization of the last dim over all leading dims."""

import contextlib

import pytest
import torch
from torch import nn

import qnorm
from qnorm import norms

OBS_DIM, NUM_ACTIONS, HIDDEN = 5, 3, (16, 8)
NORMS = qnorm.norm_names()


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.set_num_threads(1)


@contextlib.contextmanager
def registered(name, factory, **kwargs):
    """A norm kind registered for the body only, so tests never leak registry entries."""
    assert name not in qnorm.norm_names()
    qnorm.register_norm(name, factory, **kwargs)
    try:
        yield
    finally:
        del norms._REGISTRY[name]


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
