"""The DQN agent follows the mode rules, computes correct targets, syncs and learns."""

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import qnorm
from agents.config import DQNConfig
from agents.dqn import DQNAgent
from agents.replay import Batch
from qnorm import QNetworkSpec, QnormError

OBS_DIM, NUM_ACTIONS = 4, 3


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.set_num_threads(1)


def make_agent(norm="batchnorm", seed=0, **dqn):
    dqn = {"batch_size": 16, "learning_rate": 1e-3, "gamma": 0.9, **dqn}
    spec = QNetworkSpec(OBS_DIM, NUM_ACTIONS, (32, 32), norm=norm)
    return DQNAgent(spec, DQNConfig(**dqn), "cpu", seed=seed)


def make_batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    terminated = torch.zeros(n)
    truncated = torch.zeros(n)
    terminated[::4] = 1.0
    truncated[1::4] = 1.0
    return Batch(
        obs=torch.randn(n, OBS_DIM, generator=g),
        actions=torch.randint(0, NUM_ACTIONS, (n,), generator=g),
        rewards=torch.randn(n, generator=g),
        next_obs=torch.randn(n, OBS_DIM, generator=g),
        terminated=terminated,
        truncated=truncated,
    )


def buffers(net):
    return {name: b.clone() for name, b in net.named_buffers()}


def record_modes(net):
    """A list that receives ``net.training`` (and every submodule's mode) at each forward."""
    calls = []

    def hook(module, _inputs):
        calls.append((module.training, {m.training for m in module.modules()}))

    net.register_forward_pre_hook(hook)
    return calls


# --- mode rules in update() -----------------------------------------------------------------


@pytest.mark.parametrize("norm", ["batchnorm", "layernorm", "none"])
@pytest.mark.parametrize(
    ("double_dqn", "diagnose", "expected_online"),
    [
        (True, False, [False, True]),  # Double-DQN argmax (eval), then the loss forward
        (False, False, [True]),
        (True, True, [False, False, True]),  # plus the eval-mode diagnostic forward
        (False, True, [False, True]),
    ],
)
def test_loss_forward_is_the_only_train_mode_forward(norm, double_dqn, diagnose, expected_online):
    agent = make_agent(norm, double_dqn=double_dqn)
    online_calls, target_calls = record_modes(agent.online), record_modes(agent.target)
    agent.update(make_batch(), diagnose=diagnose)
    assert [training for training, _ in online_calls] == expected_online
    assert sum(training for training, _ in online_calls) == 1
    # a switch covers every submodule, not only the top-level module
    for training, submodule_modes in online_calls:
        assert submodule_modes == {training}
    assert [training for training, _ in target_calls] == [False]
    assert target_calls[0][1] == {False}
    # modes are restored afterwards: both networks rest in eval mode
    assert not any(m.training for m in agent.online.modules())
    assert not any(m.training for m in agent.target.modules())


def test_batchnorm_running_stats_move_once_per_update_and_never_in_the_target():
    agent = make_agent("batchnorm", double_dqn=True)
    target_before = buffers(agent.target)
    for i in range(3):
        agent.update(make_batch(seed=i), diagnose=True)
    tracked = [
        b for name, b in agent.online.named_buffers() if name.endswith("num_batches_tracked")
    ]
    assert tracked and all(int(t) == 3 for t in tracked)
    for name, b in agent.target.named_buffers():
        assert torch.equal(b, target_before[name]), name


def test_update_changes_only_the_online_parameters():
    agent = make_agent("batchnorm")
    online_before = copy.deepcopy(agent.online.state_dict())
    target_before = copy.deepcopy(agent.target.state_dict())
    agent.update(make_batch())
    changed = [
        k for k, v in agent.online.state_dict().items() if not torch.equal(v, online_before[k])
    ]
    assert any(k.endswith("weight") for k in changed)
    for k, v in agent.target.state_dict().items():
        assert torch.equal(v, target_before[k]), k


# --- acting ----------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["batchnorm", "layernorm", "none"])
@pytest.mark.parametrize("epsilon", [0.0, 0.3, 1.0])
def test_act_never_changes_buffers_and_returns_valid_actions(norm, epsilon):
    agent = make_agent(norm)
    agent.update(make_batch())  # running statistics away from their initial values
    before = buffers(agent.online)
    params_before = copy.deepcopy(agent.online.state_dict())
    obs = np.random.default_rng(0).normal(size=(50, OBS_DIM)).astype(np.float32)
    for n in (1, 2, 50):  # a single state included: eval mode, so batchnorm does not crash
        actions = agent.act(obs[:n], epsilon)
        assert actions.shape == (n,)
        assert np.issubdtype(actions.dtype, np.integer)
        assert ((actions >= 0) & (actions < NUM_ACTIONS)).all()
    for name, b in agent.online.named_buffers():
        assert torch.equal(b, before[name]), name
    for k, v in agent.online.state_dict().items():
        assert torch.equal(v, params_before[k]), k
    assert not any(m.training for m in agent.online.modules())


def test_act_with_epsilon_zero_is_greedy():
    agent = make_agent("batchnorm")
    agent.update(make_batch())
    obs = np.random.default_rng(1).normal(size=(64, OBS_DIM)).astype(np.float32)
    greedy = qnorm.greedy_action(agent.online, obs)
    np.testing.assert_array_equal(agent.act(obs, 0.0), greedy)
    assert len(set(greedy.tolist())) > 1  # the comparison is not trivially one action
    for i in range(5):
        assert int(agent.act(obs[i : i + 1], 0.0)[0]) == qnorm.greedy_action(agent.online, obs[i])


def test_act_with_epsilon_one_is_uniformly_random():
    agent = make_agent("none")
    obs = np.zeros((3000, OBS_DIM), dtype=np.float32)  # one state: greedy is one action
    greedy = qnorm.greedy_action(agent.online, obs[0])
    actions = agent.act(obs, 1.0)
    counts = np.bincount(actions, minlength=NUM_ACTIONS)
    assert np.all(np.abs(counts - 1000) < 150), counts
    assert (actions != greedy).mean() > 0.5
    assert (agent.act(obs, 0.0) == greedy).all()


def test_act_is_reproducible_for_a_seed():
    obs = np.random.default_rng(2).normal(size=(40, OBS_DIM)).astype(np.float32)
    a = make_agent("none", seed=5).act(obs, 0.5)
    b = make_agent("none", seed=5).act(obs, 0.5)
    np.testing.assert_array_equal(a, b)


# --- learning --------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", qnorm.norm_names())
def test_update_reduces_td_loss_on_a_fixed_batch(norm):
    agent = make_agent(norm, batch_size=64)
    batch = make_batch(64, seed=3)
    losses = [agent.update(batch).td_loss.item() for _ in range(150)]
    assert all(np.isfinite(losses))
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:3]), (losses[:3], losses[-10:])


def _grad_norm_after_update(max_grad_norm: float) -> float:
    agent = make_agent("none", max_grad_norm=max_grad_norm)
    agent.update(make_batch())
    grads = [p.grad for p in agent.online.parameters()]
    return torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item()


def test_max_grad_norm_clips_and_zero_turns_clipping_off():
    raw = _grad_norm_after_update(0.0)
    assert raw > 0.01  # the unclipped gradient is larger than the clip below
    assert _grad_norm_after_update(0.01) == pytest.approx(0.01, rel=1e-3)
    assert _grad_norm_after_update(1e6) == pytest.approx(raw, rel=1e-6)


def test_update_stats_match_the_loss_of_the_batch():
    agent = make_agent("none", loss="mse")
    batch = make_batch()
    target = agent.td_target(batch)
    with torch.no_grad():
        q = agent.online(batch.obs).gather(1, batch.actions.unsqueeze(1)).squeeze(1)
    stats = agent.update(batch)
    assert stats.td_loss.item() == pytest.approx(F.mse_loss(q, target).item(), rel=1e-5)
    assert stats.q_values.item() == pytest.approx(q.mean().item(), rel=1e-5, abs=1e-6)
    assert stats.diagnostics is None


# --- targets ---------------------------------------------------------------------------------


class TableQ(nn.Module):
    """Q-values looked up from a table by the state index stored in ``obs[:, 0]``."""

    def __init__(self, table):
        super().__init__()
        self.register_buffer("table", torch.tensor(table, dtype=torch.float32))

    def forward(self, obs):
        return self.table[obs[:, 0].long()]


# next states 0, 1, 2; the online argmax differs from the target's own max in states 0 and 1
ONLINE_TABLE = [[1.0, 3.0, 2.0], [5.0, 0.0, 0.0], [0.0, 0.0, 9.0]]
TARGET_TABLE = [[10.0, 4.0, 20.0], [7.0, 8.0, 1.0], [1.0, 2.0, 3.0]]


def table_batch():
    next_states = torch.tensor([0.0, 1.0, 2.0, 0.0, 1.0])
    next_obs = torch.zeros(5, OBS_DIM)
    next_obs[:, 0] = next_states
    return Batch(
        obs=torch.zeros(5, OBS_DIM),
        actions=torch.zeros(5, dtype=torch.int64),
        rewards=torch.tensor([1.0, 2.0, -1.0, 0.5, 0.0]),
        next_obs=next_obs,
        # row 1 terminated; row 2 truncated (still bootstraps); row 3 both (terminated wins)
        terminated=torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0]),
        truncated=torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0]),
    )


@pytest.mark.parametrize(
    ("double_dqn", "expected"),
    [
        # gamma 0.5. Double: a' = online argmax = (1, 0, 2, 1, 0) -> target values 4, 7, 3, 4, 7
        (True, [1 + 0.5 * 4, 2.0, -1 + 0.5 * 3, 0.5, 0 + 0.5 * 7]),
        # Plain: max of the target = 20, 8, 3, 20, 8
        (False, [1 + 0.5 * 20, 2.0, -1 + 0.5 * 3, 0.5, 0 + 0.5 * 8]),
    ],
)
def test_td_target_by_hand(double_dqn, expected):
    agent = make_agent("none", gamma=0.5, double_dqn=double_dqn)
    agent.online, agent.target = TableQ(ONLINE_TABLE), TableQ(TARGET_TABLE)
    target = agent.td_target(table_batch())
    assert target.tolist() == pytest.approx(expected)
    assert not target.requires_grad


@pytest.mark.parametrize("double_dqn", [True, False])
def test_td_target_uses_eval_mode_networks(double_dqn):
    """With batchnorm, the target must use running statistics (eval), not the batch's."""
    agent = make_agent("batchnorm", double_dqn=double_dqn, gamma=0.9)
    for i in range(5):
        agent.update(make_batch(seed=10 + i))
    agent.target.load_state_dict(agent.online.state_dict())
    agent.update(make_batch(seed=20))  # online and target now differ
    batch = make_batch(seed=4)
    target_q = qnorm.q_values(agent.target, batch.next_obs)  # eval mode
    if double_dqn:
        next_actions = qnorm.greedy_action(agent.online, batch.next_obs)
        next_q = target_q[torch.arange(len(next_actions)), torch.as_tensor(next_actions)]
    else:
        next_q = target_q.max(dim=1).values
    expected = batch.rewards + 0.9 * (1 - batch.terminated) * next_q
    before = buffers(agent.online)
    got = agent.td_target(batch)
    torch.testing.assert_close(got, expected)
    for name, b in agent.online.named_buffers():
        assert torch.equal(b, before[name]), name
    # terminated rows do not bootstrap; truncated rows do
    term, trunc = batch.terminated.bool(), batch.truncated.bool()
    assert torch.equal(got[term], batch.rewards[term])
    assert not torch.allclose(got[trunc], batch.rewards[trunc])


# --- target sync -----------------------------------------------------------------------------


def trained_agent(tau):
    agent = make_agent("batchnorm", tau=tau)
    for i in range(3):
        agent.update(make_batch(seed=i))
    return agent


def test_hard_sync_copies_parameters_and_running_stats():
    agent = trained_agent(tau=1.0)
    differs = [
        k
        for k, v in agent.online.state_dict().items()
        if not torch.equal(v, agent.target.state_dict()[k])
    ]
    assert any("running_mean" in k for k in differs) and any("weight" in k for k in differs)
    agent.sync_target()
    for k, v in agent.online.state_dict().items():
        assert torch.equal(agent.target.state_dict()[k], v), k
    assert not any(m.training for m in agent.target.modules())
    assert not any(p.requires_grad for p in agent.target.parameters())
    # the copy is a copy: further online updates leave the target alone
    agent.update(make_batch(seed=9))
    assert not torch.equal(
        agent.online.state_dict()["layers.linear1.weight"],
        agent.target.state_dict()["layers.linear1.weight"],
    )


def test_soft_sync_averages_parameters_and_copies_running_stats():
    tau = 0.25
    agent = trained_agent(tau=tau)
    old_params = {k: p.clone() for k, p in agent.target.named_parameters()}
    agent.sync_target()
    online_params = dict(agent.online.named_parameters())
    for k, p in agent.target.named_parameters():
        expected = (1 - tau) * old_params[k] + tau * online_params[k]
        torch.testing.assert_close(p, expected)
        assert not torch.equal(p, online_params[k]) or torch.equal(old_params[k], p)
    online_buffers = dict(agent.online.named_buffers())
    target_buffers = dict(agent.target.named_buffers())
    assert any("running_var" in k for k in target_buffers)
    for k, b in target_buffers.items():
        assert torch.equal(b, online_buffers[k]), k


# --- diagnostics -----------------------------------------------------------------------------


def test_diagnostics_for_batchnorm_are_in_range_and_show_a_gap():
    agent = make_agent("batchnorm")
    stats = agent.update(make_batch(), diagnose=True)
    d = stats.diagnostics
    assert d is not None
    assert 0.0 <= d.greedy_agreement <= 1.0
    assert d.q_gap > 0.0  # fresh running stats differ from the batch's statistics
    assert agent.update(make_batch(), diagnose=False).diagnostics is None


@pytest.mark.parametrize("norm", ["none", "layernorm", "rmsnorm"])
def test_diagnostics_without_batch_statistics_show_no_gap(norm):
    agent = make_agent(norm)
    for i in range(3):
        d = agent.update(make_batch(seed=i), diagnose=True).diagnostics
        assert d.q_gap == pytest.approx(0.0, abs=1e-6)
        assert d.greedy_agreement == 1.0


# --- configuration errors ----------------------------------------------------------------------


def test_batch_size_one_with_batchnorm_is_an_error_at_construction():
    with pytest.raises(QnormError, match="batch size 1"):
        make_agent("batchnorm", batch_size=1)
    for norm in ("none", "layernorm", "rmsnorm"):
        make_agent(norm, batch_size=1)  # fine without batch statistics


@pytest.mark.parametrize("norm", ["none", "batchnorm", "layernorm"])
@pytest.mark.parametrize("double", [True, False])
def test_update_phase_equals_sequential_updates(norm, double):
    """A phase (one target forward for all minibatches) does what step-by-step updates do."""
    torch.set_num_threads(1)
    config = DQNConfig(batch_size=8, double_dqn=double, learning_rate=1e-2)
    spec = QNetworkSpec(obs_dim=OBS_DIM, num_actions=NUM_ACTIONS, hidden_sizes=(16, 16), norm=norm)
    phased = DQNAgent(spec, config, seed=0)
    stepped = DQNAgent(spec, config, seed=0)
    batches = [make_batch(n=8, seed=s) for s in range(5)]
    fields = zip(*(batch.tensors() for batch in batches), strict=True)
    stacked = Batch(*(torch.stack(field) for field in fields))
    train_calls = []
    phased.online.register_forward_pre_hook(lambda m, _: train_calls.append(m.training))
    phase_stats = phased.update_phase(stacked, diagnose_steps={2})
    step_stats = [stepped.update(b, diagnose=(i == 2)) for i, b in enumerate(batches)]
    assert train_calls.count(True) == len(batches)  # one train-mode forward per step
    for mine, theirs in zip(phase_stats, step_stats, strict=True):
        torch.testing.assert_close(mine.td_loss, theirs.td_loss, rtol=1e-5, atol=1e-6)
    assert phase_stats[2].diagnostics is not None and phase_stats[1].diagnostics is None
    for a, b in zip(
        phased.online.state_dict().values(), stepped.online.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("preset", "obs_shape", "mirrored"),
    [
        ("minatar", (10, 10, 4), True),
        ("nature", (4, 84, 84), False),
    ],
)
def test_conv_agents_act_through_numpy_only_where_it_is_cheaper(preset, obs_shape, mirrored):
    from qnorm.conv_networks import ConvQNetworkSpec, conv_preset

    spec = ConvQNetworkSpec(obs_shape, 3, norm="batchnorm", **conv_preset(preset))
    agent = DQNAgent(spec, DQNConfig(batch_size=8), seed=0)
    assert (agent.numpy_actor is not None) is mirrored
    obs = np.random.default_rng(0).integers(0, 2, size=(2, *obs_shape)).astype(np.uint8)
    expected = qnorm.greedy_action(agent.online, obs)
    assert agent.act(obs[0], epsilon=0.0) == expected[0]  # one state: the mirror, if any
    np.testing.assert_array_equal(agent.act(obs, epsilon=0.0), expected)  # a batch: torch


def test_adam_takes_beta1_and_weight_decay_from_the_config():
    from agents.config import DQNConfig
    from agents.dqn import make_optimizer

    params = [torch.zeros(3, requires_grad=True)]
    config = DQNConfig(learning_rate=3e-4, adam_beta1=0.5, weight_decay=1e-4)
    group = make_optimizer(config, params, torch.device("cpu")).param_groups[0]
    assert group["betas"] == (0.5, 0.999) and group["weight_decay"] == 1e-4
    assert group["lr"] == 3e-4
