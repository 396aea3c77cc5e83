"""BatchNorm folding: the folded copy matches the eval-mode original and holds no BatchNorm."""

import pytest
import torch
from torch import nn

import qnorm

OBS_DIM, NUM_ACTIONS, HIDDEN = 5, 3, (16, 8)
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


def snapshot(net):
    return {name: t.detach().clone() for name, t in net.state_dict().items()}


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
