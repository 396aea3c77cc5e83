"""Evaluation: how decisive the greedy choices were; recalibration from the policy's own
states or from the run's replay memory."""

import gymnasium
import pytest
import torch
from train_helpers import tiny_config

from agents.checkpoint import load_policy
from agents.evaluation import (
    RECALIBRATION_SEED_OFFSET,
    evaluate_checkpoint,
    make_eval_env,
    on_policy_states,
    replay_states,
    run_episodes,
)
from agents.snapshot import read_snapshot
from agents.training import train
from qnorm import QnormError
from qnorm.recalibration import recalibrate_batch_statistics


def running_stats(net) -> dict:
    return {k: v.clone() for k, v in net.state_dict().items() if "running_" in k}


def test_recalibrated_statistics_come_from_the_policys_own_episodes(tmp_path):
    torch.set_num_threads(1)
    config = tiny_config(tmp_path / "run", 400, network__norm="batchnorm")
    final = train(config).final_checkpoint
    policy, result = evaluate_checkpoint(final, episodes=2, seed=3, recalibrate=120)
    assert result.recalibration == {
        "source": "policy",
        "states": 120,
        "modules": 1,
        "seed": 3 + 10_007,
    }
    expected = load_policy(final)
    env = make_eval_env("CartPole-v1")
    states = on_policy_states(expected.network, env, 120, 3 + RECALIBRATION_SEED_OFFSET)
    env.close()
    assert states.shape == (120, 4)
    recalibrate_batch_statistics(expected.network, torch.as_tensor(states))
    ours, theirs = running_stats(policy.network), running_stats(expected.network)
    assert ours.keys() == theirs.keys() and ours
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    trained = running_stats(load_policy(final).network)
    assert any(not torch.equal(trained[k], ours[k]) for k in ours)  # it did change them


@pytest.fixture(scope="module")
def wrapped_run(tmp_path_factory):
    """A BatchNorm run whose 100-transition replay ring wrapped, with its final snapshot."""
    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("wrapped") / "run"
    config = tiny_config(run_dir, 430, network__norm="batchnorm", dqn__buffer_size=100)
    train(config)
    return run_dir


def test_replay_states_come_newest_last_from_a_wrapped_ring(wrapped_run):
    tensors, state = read_snapshot(wrapped_run)
    assert state["replay"]["size"] == 100 and state["replay"]["position"] != 0  # wrapped
    states, step = replay_states(wrapped_run, 100)
    assert step == 430 and states.shape == (100, 4)
    position = state["replay"]["position"]
    next_obs = torch.cat(
        [tensors["replay.next_obs"][position:], tensors["replay.next_obs"][:position]]
    )
    ends = torch.cat([tensors["replay.terminated"], tensors["replay.truncated"]]).view(2, -1)
    ends = torch.cat([ends[:, position:], ends[:, :position]], dim=1).amax(0)
    chained = [torch.equal(next_obs[i], states[i + 1]) for i in range(99) if not ends[i]]
    assert chained and all(chained)  # in time order, each s' is the next row's s
    assert torch.equal(replay_states(wrapped_run, 30)[0], states[-30:])


def test_replay_recalibration_uses_the_newest_replay_states(wrapped_run):
    final = wrapped_run / "checkpoints" / "final"
    policy, result = evaluate_checkpoint(
        final, episodes=1, recalibrate=60, recalibrate_from="replay"
    )
    assert result.recalibration == {
        "source": "replay",
        "states": 60,
        "modules": 1,
        "snapshot_step": 430,
    }
    expected = load_policy(final)
    recalibrate_batch_statistics(expected.network, replay_states(wrapped_run, 60)[0])
    ours, theirs = running_stats(policy.network), running_stats(expected.network)
    assert ours and all(torch.equal(ours[k], theirs[k]) for k in ours)
    with pytest.raises(QnormError, match="holds 100 states, fewer than 500"):
        evaluate_checkpoint(final, episodes=1, recalibrate=500, recalibrate_from="replay")
    with pytest.raises(QnormError, match="recalibrate from one of policy, replay"):
        evaluate_checkpoint(final, episodes=1, recalibrate=60, recalibrate_from="buffer")


def test_evaluation_reports_how_decisive_the_greedy_choices_were():
    net = torch.nn.Linear(4, 2)
    with torch.no_grad():
        net.weight.zero_()
        net.weight[1, 0] = 1.0  # Q(s, right) = 2.5 + cart position
        net.bias.copy_(torch.tensor([2.0, 2.5]))
    env = make_eval_env("CartPole-v1")
    result = run_episodes(net, env, episodes=2, seed=0)
    env.close()
    assert result.median_action_gap == pytest.approx(0.5, abs=0.1)  # positions stay near 0
    assert result.mean_best_value == pytest.approx(2.5, abs=0.1)
    assert all(length < 100 for length in result.lengths)  # always right: the pole falls
    # Both episodes terminated; their last observations show how: the pole past 12 degrees
    assert len(result.terminal_observations) == 2
    assert all(abs(obs[2]) > 0.2094 for obs in result.terminal_observations)


def test_episodes_that_reach_the_time_limit_leave_no_terminal_observation():
    env = make_eval_env("CartPole-v1")
    env = gymnasium.wrappers.TimeLimit(env.unwrapped, max_episode_steps=5)
    torch.manual_seed(0)  # the same untrained policy every run
    result = run_episodes(torch.nn.Linear(4, 2), env, episodes=3, seed=0)
    env.close()
    assert result.lengths == [5, 5, 5]  # a random linear policy survives five steps
    assert result.terminal_observations == []
