"""The numpy mirror computes the same eval-mode forward as the network, on live parameters."""

import numpy as np
import pytest
import torch
from torch import nn

from qnorm import QNetworkSpec, build_q_network, norm_names, q_values
from qnorm.numpy_acting import NumpyActor


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


@pytest.mark.parametrize("norm", norm_names())
@pytest.mark.parametrize("placement", ["before", "after"])
@pytest.mark.parametrize("dueling", [False, True])
@pytest.mark.parametrize("activation", ["relu", "tanh", "silu", "elu"])
def test_mirror_matches_eval_forward(norm, placement, dueling, activation):
    spec = QNetworkSpec(5, 3, (32, 16), activation, norm, placement, True, dueling)
    net = trained(spec)
    actor = NumpyActor.mirror(net)
    assert actor is not None
    obs = np.random.default_rng(1).normal(size=(64, 5)).astype(np.float32) * 2
    expected = q_values(net, obs).numpy()
    np.testing.assert_allclose(actor.q_values(obs), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(actor.greedy(obs), expected.argmax(axis=1))


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


def test_mirror_declines_what_it_cannot_copy():
    assert NumpyActor.mirror(nn.Sequential(nn.Linear(4, 2))) is None  # not a QNetwork
    assert NumpyActor.mirror(build_q_network(QNetworkSpec(4, 2, (8,), "gelu"))) is None
    assert NumpyActor.mirror(build_q_network(QNetworkSpec(4, 2, (8,))).double()) is None
