"""The joint-batch (CrossQ-style) update: one train-mode forward of cat(s, s'), no target."""

import copy

import pytest
import torch

from agents import load_policy, train
from agents.cli import config_from_flags
from agents.config import DQNConfig, validate
from agents.dqn import DQNAgent
from agents.evaluation import evaluate_checkpoint
from agents.replay import Batch
from qnorm import QNetworkSpec, QnormError, norm_names

OBS, ACTIONS, B = 4, 3, 16


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    terminated = torch.zeros(B)
    terminated[::3] = 1.0
    return Batch(
        torch.randn(B, OBS, generator=g),
        torch.randint(0, ACTIONS, (B,), generator=g),
        torch.randn(B, generator=g),
        torch.randn(B, OBS, generator=g),
        terminated,
        torch.zeros(B),
    )


def agent(norm="batchnorm", mode="joint", **config):
    torch.manual_seed(0)
    spec = QNetworkSpec(OBS, ACTIONS, (32, 32), norm=norm)
    return DQNAgent(spec, DQNConfig(batch_size=B, bn_mode=mode, gamma=0.9, **config), seed=0)


@pytest.mark.parametrize("norm", norm_names())
def test_one_train_mode_forward_on_a_batch_of_two_b(norm):
    joint = agent(norm)
    calls = []
    joint.online.register_forward_pre_hook(
        lambda m, args: calls.append((m.training, tuple(args[0].shape)))
    )
    joint.update(batch())
    assert calls == [(True, (2 * B, OBS))]


def test_no_target_network_exists_in_joint_mode():
    joint = agent()
    assert joint.target is None
    assert joint.target_scheme == "joint_batch"
    joint.sync_target()  # a no-op, not an error
    assert agent(mode="standard").target_scheme == "target_network"


def test_target_comes_from_the_detached_s_prime_half_of_the_same_forward():
    joint = agent("batchnorm")
    reference = agent("batchnorm")  # same seed: same weights
    b = batch(3)
    reference.online.train()
    q = reference.online(torch.cat([b.obs, b.next_obs]))
    next_q = q[B:].detach().max(dim=1).values
    target = b.rewards + 0.9 * (1 - b.terminated) * next_q
    q_sa = q[:B].gather(1, b.actions[:, None]).squeeze(1)
    expected_loss = torch.nn.functional.smooth_l1_loss(q_sa, target)
    stats = joint.update(b)
    torch.testing.assert_close(stats.td_loss, expected_loss.detach())
    # Gradients reach Q(s, a) only: the s' half is a constant of the loss.
    expected_loss.backward()
    for p, p_ref in zip(joint.online.parameters(), reference.online.parameters(), strict=True):
        assert p_ref.grad is not None
        assert not torch.equal(p, p_ref)  # the joint agent stepped


@pytest.mark.parametrize("norm", ["batchnorm", "batchrenorm"])
@pytest.mark.parametrize("double_dqn", [True, False])
def test_a_freshly_synced_lagged_copy_bootstraps_as_the_online_network_does(norm, double_dqn):
    lagged = agent(norm, joint_target=True, double_dqn=double_dqn)
    plain = agent(norm)
    assert lagged.target_scheme == "joint_batch_lagged"
    for seed in range(2):  # from the same weights, each synced copy values s' identically
        torch.testing.assert_close(
            lagged.update(batch(seed)).td_loss, plain.update(batch(seed)).td_loss
        )
        lagged.sync_target()
    for p, p_plain in zip(lagged.online.parameters(), plain.online.parameters(), strict=True):
        torch.testing.assert_close(p, p_plain, rtol=0, atol=0)


def test_the_lagged_copy_stays_put_between_syncs_and_supplies_the_s_prime_values():
    lagged = agent("batchrenorm", joint_target=True)
    for seed in range(3):
        lagged.update(batch(seed))
    frozen = {k: v.clone() for k, v in lagged.target.state_dict().items()}
    assert any(not torch.equal(v, lagged.online.state_dict()[k]) for k, v in frozen.items())
    b = batch(5)
    joint = torch.cat([b.obs, b.next_obs])
    # By hand, on copies: both networks normalize the joint batch with its statistics.
    online, target = copy.deepcopy(lagged.online).train(), copy.deepcopy(lagged.target).train()
    q_joint = online(joint)
    with torch.no_grad():
        a_next = q_joint[B:].argmax(dim=1, keepdim=True)  # Double DQN: the online half picks
        value = target(joint)[B:].gather(1, a_next).squeeze(1)  # the lagged copy values
    td_target = b.rewards + 0.9 * (1 - b.terminated) * value
    q_sa = q_joint[:B].gather(1, b.actions[:, None]).squeeze(1)
    expected = torch.nn.functional.smooth_l1_loss(q_sa, td_target)
    torch.testing.assert_close(lagged.update(b).td_loss, expected.detach())
    for name, tensor in lagged.target.state_dict().items():
        assert torch.equal(tensor, frozen[name]), f"{name} moved without a sync"
    lagged.sync_target()
    synced, online_state = lagged.target.state_dict(), lagged.online.state_dict()
    assert all(torch.equal(synced[name], online_state[name]) for name in online_state)


def test_joint_target_needs_the_joint_mode(tmp_path):
    with pytest.raises(QnormError, match="joint_target needs bn_mode joint"):
        validate(
            tiny_joint(
                tmp_path, "batchnorm", **{"dqn.bn_mode": "standard", "dqn.joint_target": True}
            )
        )


def test_standard_mode_measures_the_target_normalization_gap():
    standard = agent("batchnorm", "standard")
    for seed in range(3):
        standard.update(batch(seed))
    stats = standard.update(batch(9), diagnose=True)
    assert stats.diagnostics.target_stats_gap is not None
    assert stats.diagnostics.target_stats_gap > 0
    plain = agent("none", "standard").update(batch(), diagnose=True)
    assert plain.diagnostics.target_stats_gap is None


def tiny_joint(tmp_path, norm, **extra):
    flags = {
        "run.env_id": "CartPole-v1",
        "run.total_timesteps": 800,
        "run.eval_freq": 400,
        "run.eval_episodes": 2,
        "run.run_dir": str(tmp_path / norm),
        "run.progress": False,
        "network.norm": norm,
        "network.hidden_sizes": (32, 32),
        "dqn.bn_mode": "joint",
        "dqn.learning_starts": 100,
        "dqn.batch_size": 16,
        "dqn.buffer_size": 1000,
        "dqn.train_freq": 4,
        "dqn.gradient_steps": 2,
        **extra,
    }
    return config_from_flags(flags)


@pytest.mark.parametrize("norm", norm_names())
def test_short_joint_run_trains_and_evaluates_with_every_norm(tmp_path, norm):
    torch.set_num_threads(1)
    result = train(tiny_joint(tmp_path, norm))
    assert result.global_step == 800 and len(result.evaluations) == 2
    policy, evaluated = evaluate_checkpoint(result.run_dir, episodes=2, seed=1)
    assert policy.metadata["target_scheme"] == "joint_batch"
    assert policy.metadata["train_config"]["dqn"]["bn_mode"] == "joint"
    assert len(evaluated.returns) == 2 and all(r > 0 for r in evaluated.returns)


def test_checkpoint_restores_the_batchrenorm_step_counter(tmp_path):
    torch.set_num_threads(1)
    result = train(tiny_joint(tmp_path, "batchrenorm"))
    policy = load_policy(result.final_checkpoint)
    counters = {
        name: int(buffer)
        for name, buffer in policy.network.named_buffers()
        if name.endswith("num_batches_tracked")
    }
    updates = (800 - 100) // 4 * 2  # every train-mode forward advanced every counter
    assert counters and set(counters.values()) == {updates}
