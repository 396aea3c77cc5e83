"""The flat centered RMSprop computes torch's RMSprop, shares its state layout, and stays normal."""

import copy

import pytest
import torch
from torch import nn

from agents.centered_rmsprop import FLUSH_BELOW, FLUSH_EVERY, CenteredRMSprop
from agents.dqn import RMSPROP_SETTINGS

SMALLEST_NORMAL = torch.finfo(torch.float32).tiny


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.set_num_threads(1)


def minatar_like_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(4, 16, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(1024, 32),
        nn.ReLU(),
        nn.Linear(32, 6),
    )


def torch_rmsprop(params) -> torch.optim.RMSprop:
    return torch.optim.RMSprop(params, lr=1e-3, centered=True, **RMSPROP_SETTINGS)


def flat_rmsprop(params) -> CenteredRMSprop:
    return CenteredRMSprop(params, lr=1e-3, **RMSPROP_SETTINGS)


def train_steps(net, optimizer, steps: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        # Sparse boolean planes, as MinAtar's: many units see zeros and get zero gradients.
        x = (torch.rand(32, 4, 10, 10, generator=g) < 0.1).float()
        optimizer.zero_grad()
        net(x).pow(2).mean().backward()
        optimizer.step()


def assert_same_parameters(a: nn.Module, b: nn.Module) -> None:
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_every_step_equals_torchs_centered_rmsprop_bit_for_bit():
    ours = minatar_like_net()
    theirs, start = copy.deepcopy(ours), copy.deepcopy(ours)
    train_steps(ours, flat_rmsprop(ours.parameters()), FLUSH_EVERY - 1, seed=1)
    train_steps(theirs, torch_rmsprop(theirs.parameters()), FLUSH_EVERY - 1, seed=1)
    assert_same_parameters(ours, theirs)
    moved = zip(ours.parameters(), start.parameters(), strict=True)
    assert all(not torch.equal(p, q) for p, q in moved)


def test_state_moves_between_torchs_rmsprop_and_this_one():
    net = minatar_like_net()
    theirs = torch_rmsprop(net.parameters())
    train_steps(net, theirs, 30, seed=2)
    ours_net = copy.deepcopy(net)
    ours = flat_rmsprop(ours_net.parameters())
    ours.load_state_dict(theirs.state_dict())  # a snapshot written with torch's optimizer
    saved = ours.state_dict()
    for i, entry in theirs.state_dict()["state"].items():
        assert saved["state"][i].keys() == entry.keys()
        for key, value in entry.items():
            assert torch.equal(saved["state"][i][key], value), (i, key)
    train_steps(net, theirs, 20, seed=3)
    train_steps(ours_net, ours, 20, seed=3)
    assert_same_parameters(ours_net, net)


def test_a_fresh_state_dict_is_empty_and_restores_a_fresh_optimizer():
    net = minatar_like_net()
    fresh = flat_rmsprop(net.parameters()).state_dict()
    assert fresh["state"] == {} == torch_rmsprop(net.parameters()).state_dict()["state"]
    trained = flat_rmsprop(net.parameters())
    train_steps(net, trained, 3, seed=4)
    trained.load_state_dict(fresh)
    assert trained.steps == 0 and not trained.square_avg.any() and not trained.momentum_buffer.any()


def test_a_state_of_another_shape_is_refused():
    net = minatar_like_net()
    optimizer = flat_rmsprop(net.parameters())
    train_steps(net, optimizer, 2, seed=5)
    state = optimizer.state_dict()
    state["state"][3]["square_avg"] = torch.zeros(7)
    with pytest.raises(ValueError, match="square_avg of parameter 3"):
        flat_rmsprop(minatar_like_net().parameters()).load_state_dict(state)
    del state["state"][5]
    with pytest.raises(ValueError, match="state for 5 parameters, not 6"):
        flat_rmsprop(minatar_like_net().parameters()).load_state_dict(state)


def subnormal_entries(tensors) -> int:
    return sum(int(((t != 0) & (t.abs() < SMALLEST_NORMAL)).sum()) for t in tensors)


def decay_after_one_gradient(optimizer_class, steps: int) -> tuple[int, list[torch.Tensor]]:
    """A unit that gets one gradient, then none (a unit that died): its state decays."""
    param = nn.Parameter(torch.zeros(64))
    optimizer = optimizer_class([param])
    most = 0
    for step in range(steps):
        param.grad = torch.full_like(param, 1e-3) if step == 0 else torch.zeros_like(param)
        optimizer.step()
        state = optimizer.state_dict()["state"][0]
        most = max(most, subnormal_entries(state[key] for key in ("square_avg", "grad_avg")))
    return most, [state["square_avg"], state["momentum_buffer"], state["grad_avg"]]


def test_decaying_state_never_turns_subnormal():
    steps = 3000  # 0.95 ** 3000 takes 1e-3 far below the smallest subnormal
    most_torch, _ = decay_after_one_gradient(torch_rmsprop, steps)
    most_ours, state = decay_after_one_gradient(flat_rmsprop, steps)
    assert most_torch >= 64  # the scenario does produce subnormals in torch's optimizer
    assert most_ours == 0
    assert all(not t.any() for t in state)  # flushed to exact zeros, not left to linger
    assert FLUSH_BELOW > SMALLEST_NORMAL * 1e7  # ~360 decay steps from the floor to subnormal


def test_zero_variance_gives_a_finite_step_of_zero():
    param = nn.Parameter(torch.ones(8))
    optimizer = flat_rmsprop([param])
    for _ in range(3):
        param.grad = torch.zeros_like(param)
        optimizer.step()
    assert torch.equal(param.detach(), torch.ones(8))
    assert torch.equal(optimizer.avg, torch.full((8,), RMSPROP_SETTINGS["eps"]))
