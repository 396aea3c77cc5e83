"""N-step returns: every sampled target equals the one walked by hand through the added stream."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from test_frame_replay import FakeImageEnv, collect

from agents.config import TrainConfig, validate
from agents.dqn import DQNAgent
from agents.frame_replay import FrameReplayBuffer
from agents.replay import Batch, ReplayBuffer
from qnorm import QNetworkSpec, QnormError

GAMMA = 0.9


class FakeVectorEnv(FakeImageEnv):
    """FakeImageEnv's episodes with the observation [env, episode, step] (unique per state)."""

    def __init__(self, env_index: int) -> None:
        super().__init__(env_index, (3,), np.float32)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)

    def frame(self) -> np.ndarray:
        return np.array([self.env_index, self.episode, self.t], dtype=np.float32)


def vector_envs(num_envs: int) -> SyncVectorEnv:
    return SyncVectorEnv(
        [lambda i=i: FakeVectorEnv(i) for i in range(num_envs)],
        autoreset_mode=AutoresetMode.NEXT_STEP,
    )


def image_envs(num_envs: int) -> SyncVectorEnv:
    return SyncVectorEnv(
        [lambda i=i: FakeImageEnv(i, (4, 3), np.uint8) for i in range(num_envs)],
        autoreset_mode=AutoresetMode.NEXT_STEP,
    )


def vector_buffer(capacity, num_envs, n_step):
    return ReplayBuffer(capacity, (3,), num_envs=num_envs, n_step=n_step, gamma=GAMMA, seed=1)


def frame_buffer(capacity, num_envs, n_step):
    return FrameReplayBuffer(
        capacity, (4, 3), np.uint8, num_envs=num_envs, n_step=n_step, gamma=GAMMA, seed=1
    )


KINDS = {"vector": (vector_envs, vector_buffer), "frames": (image_envs, frame_buffer)}


def stored_rewards(buffer) -> set[float]:
    """The rewards (names) of the transitions a buffer can still sample."""
    if isinstance(buffer, FrameReplayBuffer):
        return set(buffer.rewards[buffer._valid[: len(buffer)]].tolist())
    return set(buffer.rewards[: len(buffer)].tolist())


def flat(batches: Batch) -> Batch:
    return Batch(*(field.flatten(0, 1) for field in batches))


def expected_returns(added: list[tuple], stored: set[float], n: int) -> dict[bytes, tuple]:
    """Per obs: (return, next_obs, terminated, truncated, gamma ** m), walked by hand."""
    by_env: dict[int, list[tuple]] = {}
    for transition in added:
        by_env.setdefault(transition[0], []).append(transition)
    expected = {}
    for stream in by_env.values():
        for start, (_, obs, _, reward, *_) in enumerate(stream):
            total, steps, last = float(reward), 1, stream[start]
            while steps < n and not (last[5] or last[6]) and start + steps < len(stream):
                following = stream[start + steps]
                if float(following[3]) not in stored:
                    break
                total += GAMMA**steps * float(following[3])
                steps, last = steps + 1, following
            expected[obs.tobytes()] = (total, last[4], last[5], last[6], GAMMA**steps)
    return expected


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize(("n_step", "num_envs", "capacity"), [(3, 1, 500), (3, 3, 23), (5, 2, 40)])
def test_every_sampled_target_is_the_hand_walked_n_step_return(kind, n_step, num_envs, capacity):
    make_envs, make_buffer = KINDS[kind]
    buffer = make_buffer(capacity, num_envs, n_step)
    added = collect(buffer, make_envs(num_envs), steps=58, seed=3)
    newest = added[-1]
    assert not (newest[5] or newest[6])  # a stream whose newest return is cut short by it
    expected = expected_returns(added, stored_rewards(buffer), n_step)
    batch = flat(buffer.sample_batches(20, len(buffer)))
    lengths = set()
    for row in range(batch.obs.shape[0]):
        total, next_obs, terminated, truncated, discount = expected[
            batch.obs[row].numpy().tobytes()
        ]
        assert float(batch.rewards[row]) == pytest.approx(total, rel=1e-6)
        np.testing.assert_array_equal(batch.next_obs[row].numpy(), next_obs)
        assert float(batch.terminated[row]) == float(terminated)
        assert float(batch.truncated[row]) == float(truncated)
        assert float(batch.discounts[row]) == pytest.approx(discount, rel=1e-6)
        lengths.add(round(np.log(float(batch.discounts[row])) / np.log(GAMMA)))
    # full returns, and ones cut by an episode end or by the stream's newest transition
    assert lengths == set(range(1, n_step + 1))


@pytest.mark.parametrize("kind", list(KINDS))
def test_one_step_batches_carry_no_discounts(kind):
    make_envs, make_buffer = KINDS[kind]
    buffer = make_buffer(200, 2, 1)
    collect(buffer, make_envs(2), steps=20)
    batch = buffer.sample(8)
    assert batch.discounts is None


def test_a_stream_stops_at_episode_ends_that_end_episodes_marks():
    """After end_episodes (a resume mid-episode), no return reaches into the next episode."""
    buffer = vector_buffer(100, 1, 4)
    obs = np.zeros((1, 3), np.float32)
    for t in range(3):
        buffer.add(obs + t, [0], [1.0], obs + t + 1, [False], [False])
    buffer.end_episodes()
    buffer.add(obs + 10, [0], [100.0], obs + 11, [False], [False])
    batch = flat(buffer.sample_batches(50, 4))
    first = batch.obs[:, 0] == 0
    assert torch.allclose(batch.rewards[first], torch.tensor(1 + GAMMA + GAMMA**2))
    assert set(batch.rewards[batch.obs[:, 0] == 10].tolist()) == {100.0}


def test_n_step_links_survive_a_snapshot():
    buffer = vector_buffer(30, 2, 3)
    envs = vector_envs(2)
    collect(buffer, envs, steps=25, seed=5)
    restored = vector_buffer(30, 2, 3)
    restored.load_state(buffer.state_tensors(), buffer.state())
    for name in ("obs", "rewards", "next_obs", "terminated", "discounts"):
        torch.testing.assert_close(
            getattr(restored.sample(16), name), getattr(buffer.sample(16), name)
        )
    assert restored.state()["last_rows"] == buffer.state()["last_rows"]


def test_a_snapshot_without_links_loads_as_one_step_returns():
    old = ReplayBuffer(10, (3,), num_envs=1)
    obs = np.zeros((1, 3), np.float32)
    for t in range(4):
        old.add(obs + t, [0], [1.0], obs + t + 1, [False], [False])
    restored = vector_buffer(10, 1, 3)
    restored.load_state(old.state_tensors(), old.state())
    torch.testing.assert_close(
        flat(restored.sample_batches(10, 4)).discounts, torch.full((40,), GAMMA)
    )


def test_an_n_step_buffer_takes_one_row_per_env_and_env_ids_in_range():
    buffer = vector_buffer(10, 2, 3)
    obs = np.zeros((3, 3), np.float32)
    flags = np.zeros(3, bool)
    three = (obs, np.zeros(3, np.int64), np.zeros(3, np.float32), obs, flags, flags)
    with pytest.raises(QnormError, match="one row per env"):
        buffer.add(*three)
    with pytest.raises(QnormError, match=r"env_ids must be 1 indices in \[0, 2\)"):
        buffer.add(*(column[:1] for column in three), env_ids=[2])
    assert len(buffer) == 0  # refused adds store nothing


def test_n_step_is_validated():
    config = TrainConfig()
    config.dqn.n_step = 0
    with pytest.raises(QnormError, match="n_step must be positive"):
        validate(config)
    with pytest.raises(QnormError, match="n_step"):
        ReplayBuffer(10, (3,), n_step=0)


def test_the_td_target_bootstraps_with_the_batch_discounts():
    config = TrainConfig()
    config.dqn.double_dqn = False
    agent = DQNAgent(QNetworkSpec(obs_dim=3, num_actions=2, hidden_sizes=(8,)), config.dqn)
    obs = torch.randn(4, 3)
    batch = Batch(
        obs,
        torch.zeros(4, dtype=torch.int64),
        torch.tensor([1.0, 2.0, 3.0, 4.0]),
        obs + 1,
        torch.tensor([0.0, 0.0, 1.0, 0.0]),
        torch.zeros(4),
        torch.tensor([0.5, 0.25, 0.5, 0.125]),
    )
    next_q = agent.target_q(batch.next_obs).max(dim=1).values
    expected = batch.rewards + batch.discounts * (1 - batch.terminated) * next_q
    torch.testing.assert_close(agent.td_target(batch), expected)
    one_step = batch._replace(discounts=None)
    expected = one_step.rewards + config.dqn.gamma * (1 - batch.terminated) * next_q
    torch.testing.assert_close(agent.td_target(one_step), expected)


def test_a_buffer_smaller_than_one_step_links_no_row_to_itself():
    """Each add overwrites every row: the envs' previous rows are gone, so nothing follows."""
    buffer = vector_buffer(3, 3, 2)
    obs = np.zeros((3, 3), np.float32)
    none_ended = np.zeros(3, bool)
    for t in range(2):
        rewards = np.arange(3, dtype=np.float32) + 10 * t
        buffer.add(obs + t, np.zeros(3, np.int64), rewards, obs + t + 1, none_ended, none_ended)
    batch = flat(buffer.sample_batches(20, 3))
    assert set(batch.rewards.tolist()) == {10.0, 11.0, 12.0}
    torch.testing.assert_close(batch.discounts, torch.full((60,), GAMMA))
