"""Evaluation's recalibration uses the policy's own states, and leaves other nets alone."""

import torch
from train_helpers import tiny_config

from agents.checkpoint import load_policy
from agents.evaluation import (
    RECALIBRATION_SEED_OFFSET,
    evaluate_checkpoint,
    make_eval_env,
    on_policy_states,
)
from agents.training import train
from qnorm.recalibration import recalibrate_batch_statistics


def running_stats(net) -> dict:
    return {k: v.clone() for k, v in net.state_dict().items() if "running_" in k}


def test_recalibrated_statistics_come_from_the_policys_own_episodes(tmp_path):
    torch.set_num_threads(1)
    config = tiny_config(tmp_path / "run", 400, network__norm="batchnorm")
    final = train(config).final_checkpoint
    policy, result = evaluate_checkpoint(final, episodes=2, seed=3, recalibrate=120)
    assert result.recalibration == {"states": 120, "modules": 1, "seed": 3 + 10_007}
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
