"""Recalibrated running statistics are the exact statistics of each norm's eval-mode input."""

import pytest
import torch

import qnorm
from qnorm import QnormError
from qnorm.norms import is_batch_statistics_module
from qnorm.recalibration import recalibrate_batch_statistics


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.set_num_threads(1)


def vector_net(norm: str) -> torch.nn.Module:
    return qnorm.build_q_network(qnorm.QNetworkSpec(4, 2, (32, 16), norm=norm))


def conv_net() -> torch.nn.Module:
    spec = qnorm.ConvQNetworkSpec((10, 10, 4), 3, norm="batchnorm", **qnorm.conv_preset("minatar"))
    return qnorm.build_q_network(spec)


def eval_inputs(net, states) -> dict:
    """Each batch-statistics module's eval-mode input, per channel as rows (the modules'
    forward patched on the instance: qnorm's MLP skips module hooks)."""
    seen = {}
    modules = [m for m in net.modules() if is_batch_statistics_module(m)]
    for module in modules:

        def keep(x, module=module, original=module.forward):
            x64 = x.double()
            rows = x64.transpose(1, -1).reshape(-1, x.shape[1]) if x.dim() == 4 else x64
            seen[module] = rows
            return original(x)

        module.forward = keep
    with torch.no_grad(), qnorm.eval_mode(net):
        net(states)
    for module in modules:
        del module.forward
    assert len(seen) == len(modules)
    return seen


def stale(net) -> None:
    for module in net.modules():
        if is_batch_statistics_module(module):
            module.running_mean.fill_(5.0)
            module.running_var.fill_(100.0)


@pytest.mark.parametrize(
    "make, states",
    [
        (lambda: vector_net("batchnorm"), lambda: torch.randn(300, 4) * 3 + 1),
        (lambda: vector_net("batchrenorm"), lambda: torch.randn(300, 4) * 3 + 1),
        (conv_net, lambda: (torch.rand(300, 10, 10, 4) < 0.2).float()),
    ],
    ids=["batchnorm", "batchrenorm", "conv-batchnorm"],
)
def test_every_module_gets_the_exact_statistics_of_its_eval_mode_input(make, states):
    net, states = make(), states()
    stale(net)
    net.train()
    assert recalibrate_batch_statistics(net, states, chunk=64) >= 2
    assert net.training  # the caller's mode is back
    for module, rows in eval_inputs(net, states).items():
        torch.testing.assert_close(module.running_mean, rows.mean(0).float(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(module.running_var, rows.var(0).float(), atol=1e-5, rtol=1e-4)


def test_a_network_without_batch_statistics_is_left_alone():
    net = vector_net("layernorm")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert recalibrate_batch_statistics(net, torch.randn(10, 4)) == 0
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_one_state_is_not_enough_to_recalibrate():
    with pytest.raises(QnormError, match="at least 2 states"):
        recalibrate_batch_statistics(vector_net("batchnorm"), torch.randn(1, 4))
