"""Training-loop semantics: autoreset steps, truncation, and SB3's step and update counting."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from train_helpers import tiny_config as shared_tiny_config

from agents.dqn import DQNAgent
from agents.envs import make_vector_env
from agents.network_specs import network_spec
from agents.run_dir import create_run_dir
from agents.schedules import learning_rate_at, linear_epsilon
from agents.training import Trainer, train

SHORT_CARTPOLE = "QnormTest/ShortCartPole-v0"  # CartPole with a 10-step time limit
if SHORT_CARTPOLE not in gym.registry:
    gym.register(
        SHORT_CARTPOLE,
        entry_point="gymnasium.envs.classic_control.cartpole:CartPoleEnv",
        max_episode_steps=10,
    )

TAU = 0.02  # CartPole's Euler time step: x' = x + TAU * x_dot, theta' = theta + TAU * theta_dot


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.set_num_threads(1)


SEMANTICS_DEFAULTS = {
    "run__log_freq": 1000,
    "run__diagnostics_freq": 0,
    "dqn__buffer_size": 5000,
    "dqn__train_freq": 4,
    "dqn__target_update_interval": 100,
}


def tiny_config(tmp_path, **overrides):
    return shared_tiny_config(tmp_path / "run", 400, **{**SEMANTICS_DEFAULTS, **overrides})


def make_trainer(config):
    """A Trainer built the way ``train`` builds one, so its counters can be inspected."""
    envs = make_vector_env(config.run.env_id, config.run.num_envs)
    space = envs.single_observation_space
    spec = network_spec(config, space, int(envs.single_action_space.n))
    agent = DQNAgent(spec, config.dqn, "cpu", seed=config.run.seed)
    return Trainer(config, envs, None, agent, create_run_dir(config))


def run_trainer(config):
    trainer = make_trainer(config)
    try:
        result = trainer.run()
    finally:
        trainer.envs.close()
    return trainer, result


def stored(buffer):
    n = len(buffer)
    return (
        buffer.obs[:n].double().numpy(),
        buffer.next_obs[:n].double().numpy(),
        buffer.terminated[:n].numpy(),
        buffer.truncated[:n].numpy(),
    )


def follows_cartpole_dynamics(obs, next_obs):
    """Per row: whether ``next_obs`` is CartPole's Euler successor of ``obs``."""
    x_ok = np.isclose(next_obs[:, 0], obs[:, 0] + TAU * obs[:, 1], atol=1e-5)
    theta_ok = np.isclose(next_obs[:, 2], obs[:, 2] + TAU * obs[:, 3], atol=1e-5)
    return x_ok & theta_ok


def test_the_dynamics_check_catches_autoreset_transitions():
    """Control: transitions that cross an autoreset do fail the successor check."""
    envs = make_vector_env("CartPole-v1", 2)
    obs, _ = envs.reset(seed=0)
    rng = np.random.default_rng(0)
    done = np.zeros(2, dtype=bool)
    crossing, normal = [], []
    for _ in range(200):
        next_obs, _, terminated, truncated, _ = envs.step(rng.integers(2, size=2))
        for i in range(2):
            (crossing if done[i] else normal).append((obs[i], next_obs[i]))
        obs, done = next_obs, terminated | truncated
    envs.close()
    assert len(crossing) >= 5
    c_obs, c_next = (np.array(a, dtype=np.float64) for a in zip(*crossing, strict=True))
    n_obs, n_next = (np.array(a, dtype=np.float64) for a in zip(*normal, strict=True))
    assert not follows_cartpole_dynamics(c_obs, c_next).any()
    assert follows_cartpole_dynamics(n_obs, n_next).all()


@pytest.mark.parametrize("num_envs", [1, 2, 3])
def test_no_stored_transition_crosses_an_autoreset(tmp_path, num_envs):
    config = tiny_config(
        tmp_path, run__num_envs=num_envs, run__total_timesteps=600, dqn__learning_starts=200
    )
    trainer, _ = run_trainer(config)
    obs, next_obs, terminated, truncated = stored(trainer.buffer)
    assert terminated.sum() >= 10  # episodes did end, so autoresets happened
    assert follows_cartpole_dynamics(obs, next_obs).all()
    # exactly one step per finished episode (the reset step) is skipped, except for
    # episodes that end on the very last step, whose reset step is never taken
    dones = int(((terminated + truncated) > 0).sum())
    skipped = trainer.global_step - len(trainer.buffer)
    assert trainer.global_step == 600
    assert dones - num_envs <= skipped <= dones


def test_truncated_transitions_are_stored_and_keep_bootstrapping(tmp_path):
    config = tiny_config(
        tmp_path,
        run__env_id=SHORT_CARTPOLE,
        run__num_envs=2,
        run__total_timesteps=400,
        dqn__learning_starts=400,
    )
    trainer, _ = run_trainer(config)
    obs, next_obs, terminated, truncated = stored(trainer.buffer)
    only_truncated = (truncated == 1) & (terminated == 0)
    assert only_truncated.sum() >= 5
    assert (terminated == 1).sum() >= 1  # some episodes fail before the time limit too
    # the final observation of a truncated episode is stored, not the next reset state
    assert follows_cartpole_dynamics(obs, next_obs).all()
    # and the agent bootstraps from it: its target is not the bare reward
    batch = trainer.buffer.sample(len(trainer.buffer))
    targets = trainer.agent.td_target(batch)
    rows = (batch.truncated == 1) & (batch.terminated == 0)
    assert rows.any()
    assert not torch.allclose(targets[rows], batch.rewards[rows])
    ended = batch.terminated == 1
    assert torch.equal(targets[ended], batch.rewards[ended])


def expected_counts(total, num_envs, train_freq, gradient_steps, learning_starts, interval):
    """Updates and target syncs as Stable-Baselines3's DQN counts them."""
    iterations = -(-total // num_envs)
    per_train = gradient_steps if gradient_steps > 0 else train_freq * num_envs
    updates = sum(
        per_train
        for i in range(1, iterations + 1)
        if i % train_freq == 0 and i * num_envs > learning_starts
    )
    syncs = iterations // max(interval // num_envs, 1)
    return updates, syncs


@pytest.mark.parametrize(
    ("num_envs", "train_freq", "gradient_steps", "learning_starts", "interval", "total"),
    [
        (1, 4, 1, 100, 50, 400),
        (2, 3, 2, 50, 10, 300),
        (3, 2, -1, 64, 30, 301),  # total not a multiple of num_envs: rounds up to 303
        (4, 5, -1, 40, 3, 200),  # interval below num_envs: sync every vector step
        (2, 1, 1, 300, 100, 300),  # learning_starts == total: never learns
    ],
)
def test_update_and_sync_counts_follow_sb3(
    tmp_path, num_envs, train_freq, gradient_steps, learning_starts, interval, total
):
    config = tiny_config(
        tmp_path,
        run__num_envs=num_envs,
        run__total_timesteps=total,
        dqn__train_freq=train_freq,
        dqn__gradient_steps=gradient_steps,
        dqn__learning_starts=learning_starts,
        dqn__target_update_interval=interval,
    )
    trainer = make_trainer(config)
    syncs = []
    original_sync = trainer.agent.sync_target
    trainer.agent.sync_target = lambda: (syncs.append(trainer.global_step), original_sync())
    updates = []
    original_phase = trainer.agent.update_phase
    trainer.agent.update_phase = lambda batches, diagnose_steps=(): (
        updates.extend([trainer.global_step] * batches.obs.shape[0]),
        original_phase(batches, diagnose_steps),
    )[1]
    try:
        result = trainer.run()
    finally:
        trainer.envs.close()
    want_updates, want_syncs = expected_counts(
        total, num_envs, train_freq, gradient_steps, learning_starts, interval
    )
    assert trainer.num_updates == len(updates) == want_updates
    assert len(syncs) == want_syncs
    assert result.global_step == trainer.global_step == -(-total // num_envs) * num_envs
    assert all(step > learning_starts for step in updates)


def test_learning_starts_zero_trains_once_a_batch_is_stored(tmp_path):
    """learning_starts below batch_size (as in the Acrobot preset) must not crash."""
    config = tiny_config(
        tmp_path,
        run__total_timesteps=200,
        dqn__learning_starts=0,
        dqn__batch_size=32,
        dqn__train_freq=4,
    )
    trainer = make_trainer(config)
    sizes = []
    original_phase = trainer.agent.update_phase
    trainer.agent.update_phase = lambda batches, diagnose_steps=(): (
        sizes.append(len(trainer.buffer)),
        original_phase(batches, diagnose_steps),
    )[1]
    try:
        trainer.run()
    finally:
        trainer.envs.close()
    assert min(sizes) >= 32
    # learning begins as soon as a batch is stored: no later than from step 48 on
    assert trainer.num_updates >= expected_counts(200, 1, 4, 1, 48, 100)[0]


def test_epsilon_schedule():
    assert linear_epsilon(0, 1000, 0.1, 1.0, 0.05) == 1.0
    assert linear_epsilon(50, 1000, 0.1, 1.0, 0.05) == pytest.approx(0.525)
    assert linear_epsilon(100, 1000, 0.1, 1.0, 0.05) == 0.05
    assert linear_epsilon(999, 1000, 0.1, 1.0, 0.05) == 0.05
    values = [linear_epsilon(s, 1000, 0.5, 0.8, 0.1) for s in range(0, 600, 50)]
    assert values == sorted(values, reverse=True)


def test_learning_rate_schedules():
    assert learning_rate_at(500, 1000, 1e-3, "constant") == 1e-3
    assert learning_rate_at(0, 1000, 1e-3, "linear") == 1e-3
    assert learning_rate_at(750, 1000, 1e-3, "linear") == pytest.approx(2.5e-4)
    assert learning_rate_at(1000, 1000, 1e-3, "linear") == 0.0


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])
def test_a_linear_schedule_sets_each_update_phase_learning_rate(tmp_path, optimizer):
    config = tiny_config(tmp_path, dqn__lr_schedule="linear", dqn__optimizer=optimizer)
    trainer, _ = run_trainer(config)
    seen = []
    for step in (100, 399):
        trainer.global_step = step
        trainer.learn()
        opt = trainer.agent.optimizer
        seen.append(opt.lr if optimizer == "rmsprop" else opt.param_groups[0]["lr"])
    base = config.dqn.learning_rate
    assert seen == pytest.approx([base * 0.75, base * (1 - 399 / 400)])


def test_random_actions_until_learning_starts_then_the_agent_acts(tmp_path):
    config = tiny_config(tmp_path, run__total_timesteps=200, dqn__learning_starts=120)
    trainer = make_trainer(config)
    acted_at = []
    original_act = trainer.agent.act
    trainer.agent.act = lambda obs, eps: (
        acted_at.append(trainer.global_step),
        original_act(obs, eps),
    )[1]
    try:
        trainer.run()
    finally:
        trainer.envs.close()
    assert acted_at and min(acted_at) == 120 and len(acted_at) == 80


def test_training_is_deterministic_for_a_seed(tmp_path):
    def final_weights(name):
        config = tiny_config(tmp_path / name, run__num_envs=2, run__total_timesteps=300)
        result = train(config)
        from safetensors.torch import load_file

        return load_file(result.final_checkpoint / "model.safetensors")

    a, b = final_weights("a"), final_weights("b")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def flushes_subnormals() -> bool:
    """Whether CPU arithmetic computes a subnormal float as zero right now."""
    return (torch.tensor([1e-39]) * 1.0).item() == 0.0


@pytest.mark.parametrize("flush", [True, False])
def test_a_cpu_run_flushes_subnormal_floats_only_while_it_trains(tmp_path, flush):
    seen = []
    config = tiny_config(tmp_path, run__flush_denormal=flush, run__eval_freq=200)
    train(config, should_stop=lambda step, _: seen.append(flushes_subnormals()) or False)
    assert seen and all(value == flush for value in seen)
    assert not flushes_subnormals()
