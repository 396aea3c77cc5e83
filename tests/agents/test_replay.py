"""The replay buffer: preallocated, circular, dtype-preserving, uniform and reproducible."""

import numpy as np
import pytest
import torch

from agents import memory
from agents.config import TrainConfig, validate
from agents.replay import Batch, ReplayBuffer
from qnorm import QnormError

OBS_SHAPE = (3,)


def rows(start, n, obs_shape=OBS_SHAPE, dtype=np.float32):
    """``n`` transitions whose reward (and every obs entry) equals their running index."""
    idx = np.arange(start, start + n)
    obs = np.repeat(idx[:, None], int(np.prod(obs_shape)), axis=1).reshape(n, *obs_shape)
    return (
        obs.astype(dtype),
        (idx % 2).astype(np.int64),
        idx.astype(np.float32),
        (obs + 1).astype(dtype),
        (idx % 3 == 0),
        (idx % 5 == 0),
    )


def test_storage_is_preallocated_and_starts_empty():
    buf = ReplayBuffer(10, OBS_SHAPE)
    assert len(buf) == 0
    assert buf.obs.shape == (10, *OBS_SHAPE)
    assert buf.next_obs.shape == (10, *OBS_SHAPE)
    for name in ("actions", "rewards", "terminated", "truncated"):
        assert getattr(buf, name).shape == (10,)
    storage = buf.obs.data_ptr()
    buf.add(*rows(0, 4))
    assert buf.obs.data_ptr() == storage  # writes go into the preallocated tensors
    assert len(buf) == 4


def test_wrap_around_overwrites_the_oldest_and_size_caps_at_capacity():
    buf = ReplayBuffer(5, OBS_SHAPE)
    buf.add(*rows(0, 3))
    buf.add(*rows(3, 4))  # crosses the end: rows 5 and 6 overwrite rows 0 and 1
    assert len(buf) == 5
    assert buf.position == 2
    assert sorted(buf.rewards.tolist()) == [2.0, 3.0, 4.0, 5.0, 6.0]
    assert buf.rewards.tolist() == [5.0, 6.0, 2.0, 3.0, 4.0]
    # the columns of each row still belong together after wrapping
    np.testing.assert_array_equal(buf.obs[:, 0].numpy(), buf.rewards.numpy())
    np.testing.assert_array_equal(buf.next_obs[:, 0].numpy(), buf.rewards.numpy() + 1)
    for i in range(7, 20):
        buf.add(*[column[0] for column in rows(i, 1)])
        assert len(buf) == 5
    assert sorted(buf.rewards.tolist()) == [15.0, 16.0, 17.0, 18.0, 19.0]


def test_uint8_observations_stay_uint8_in_storage_and_samples():
    buf = ReplayBuffer(8, (2, 2), obs_dtype=np.uint8)
    obs, actions, rewards, next_obs, term, trunc = rows(250, 4, obs_shape=(2, 2), dtype=np.uint8)
    buf.add(obs, actions, rewards, next_obs, term, trunc)
    assert buf.obs.dtype == torch.uint8 and buf.next_obs.dtype == torch.uint8
    batch = buf.sample(3)
    assert batch.obs.dtype == torch.uint8 and batch.next_obs.dtype == torch.uint8
    assert batch.obs.shape == (3, 2, 2)
    # values above 127 survive (no signed or float round trip)
    assert set(batch.obs.flatten().tolist()) <= {250, 251, 252, 253}


def test_float64_observations_keep_their_dtype():
    buf = ReplayBuffer(4, OBS_SHAPE, obs_dtype="float64")
    buf.add(*rows(0, 2, dtype=np.float64))
    assert buf.obs.dtype == torch.float64
    assert buf.sample(2).obs.dtype == torch.float64


def test_unbatched_add_equals_batched_add():
    one_by_one = ReplayBuffer(6, OBS_SHAPE)
    batched = ReplayBuffer(6, OBS_SHAPE)
    data = rows(0, 4)
    batched.add(*data)
    for i in range(4):
        one_by_one.add(*[column[i] for column in data])
    assert len(one_by_one) == len(batched) == 4
    for name in ("obs", "next_obs", "actions", "rewards", "terminated", "truncated"):
        assert torch.equal(getattr(one_by_one, name), getattr(batched, name)), name


def test_terminated_is_stored_separately_from_truncated():
    buf = ReplayBuffer(4, OBS_SHAPE)
    obs, actions, rewards, next_obs, _, _ = rows(0, 4)
    terminated = np.array([True, False, True, False])
    truncated = np.array([False, True, True, False])
    buf.add(obs, actions, rewards, next_obs, terminated, truncated)
    assert buf.terminated.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert buf.truncated.tolist() == [0.0, 1.0, 1.0, 0.0]


def test_sample_shapes_and_dtypes():
    buf = ReplayBuffer(16, OBS_SHAPE)
    buf.add(*rows(0, 10))
    batch = buf.sample(7)
    assert isinstance(batch, Batch)
    assert batch.obs.shape == batch.next_obs.shape == (7, *OBS_SHAPE)
    assert batch.obs.dtype == batch.next_obs.dtype == torch.float32
    assert batch.actions.shape == (7,) and batch.actions.dtype == torch.int64
    for column in (batch.rewards, batch.terminated, batch.truncated):
        assert column.shape == (7,) and column.dtype == torch.float32
    # sampled rows are whole rows: every column comes from the same stored transition
    idx = batch.rewards.long()
    assert torch.equal(batch.obs[:, 0], batch.rewards)
    assert torch.equal(batch.actions, idx % 2)
    assert torch.equal(batch.terminated, (idx % 3 == 0).float())
    assert torch.equal(batch.truncated, (idx % 5 == 0).float())


def test_sampling_covers_only_stored_rows_roughly_uniformly():
    buf = ReplayBuffer(100, OBS_SHAPE, seed=3)
    buf.add(*rows(0, 4))  # rows 4..99 are unwritten
    buf.rewards[4:] = -1.0  # mark unwritten rows so drawing one would show
    values = torch.cat([buf.sample(4).rewards for _ in range(1000)])
    assert (values >= 0).all()
    counts = np.bincount(values.long().numpy(), minlength=4)
    assert counts.sum() == 4000 and len(counts) == 4
    assert np.all(np.abs(counts - 1000) < 150), counts


def test_sampling_after_wrap_uses_every_row_uniformly():
    buf = ReplayBuffer(5, OBS_SHAPE, seed=1)
    buf.add(*rows(0, 4))
    buf.add(*rows(4, 4))
    values = torch.cat([buf.sample(5).rewards for _ in range(1000)]).long().numpy()
    assert set(values.tolist()) == {3, 4, 5, 6, 7}
    counts = np.bincount(values)[3:]
    assert np.all(np.abs(counts - 1000) < 150), counts


def test_sampling_is_reproducible_with_the_same_seed():
    def draws(seed):
        buf = ReplayBuffer(50, OBS_SHAPE, seed=seed)
        buf.add(*rows(0, 50))
        return torch.cat([buf.sample(32).rewards for _ in range(3)])

    assert torch.equal(draws(7), draws(7))
    assert not torch.equal(draws(7), draws(8))


@pytest.mark.parametrize(
    "bad",
    [
        {"obs": np.zeros((2, 4), np.float32)},  # wrong observation width
        {"next_obs": np.zeros((2, 2), np.float32)},
        {"actions": np.zeros(3, np.int64)},  # wrong number of actions
        {"rewards": np.zeros((2, 1), np.float32)},
        {"terminated": np.zeros(1, bool)},
        {"truncated": np.zeros(5, bool)},
    ],
)
def test_wrong_transition_shape_is_a_clear_error(bad):
    buf = ReplayBuffer(8, OBS_SHAPE)
    obs, actions, rewards, next_obs, term, trunc = rows(0, 2)
    columns = {
        "obs": obs,
        "actions": actions,
        "rewards": rewards,
        "next_obs": next_obs,
        "terminated": term,
        "truncated": trunc,
    }
    columns.update(bad)
    with pytest.raises(QnormError, match="shape"):
        buf.add(**columns)
    assert len(buf) == 0  # nothing half-written


def test_adding_more_than_capacity_at_once_is_an_error():
    buf = ReplayBuffer(3, OBS_SHAPE)
    with pytest.raises(QnormError, match="capacity"):
        buf.add(*rows(0, 4))


def test_sampling_more_than_stored_is_a_clear_error():
    buf = ReplayBuffer(10, OBS_SHAPE)
    with pytest.raises(QnormError, match="holding 0"):
        buf.sample(1)
    buf.add(*rows(0, 3))
    with pytest.raises(QnormError, match="cannot sample 4"):
        buf.sample(4)
    assert buf.sample(3).obs.shape[0] == 3


@pytest.mark.parametrize("capacity", [0, -1])
def test_capacity_below_one_is_a_clear_error(capacity):
    with pytest.raises(QnormError, match="capacity"):
        ReplayBuffer(capacity, OBS_SHAPE)


def test_config_rejects_a_buffer_smaller_than_the_batch():
    config = TrainConfig()
    config.dqn.buffer_size, config.dqn.batch_size = 16, 32
    with pytest.raises(QnormError, match="buffer_size 16 is smaller than batch_size 32"):
        validate(config)
    config.dqn.buffer_size = 32
    validate(config)  # equal is fine


def test_env_ids_are_accepted_and_change_nothing():
    with_ids, without = ReplayBuffer(6, OBS_SHAPE), ReplayBuffer(6, OBS_SHAPE)
    with_ids.add(*rows(0, 3), env_ids=np.array([0, 2, 3]))
    without.add(*rows(0, 3))
    for name in ("obs", "next_obs", "actions", "rewards", "terminated", "truncated"):
        assert torch.equal(getattr(with_ids, name), getattr(without, name)), name


def test_nbytes_is_known_before_allocating():
    buf = ReplayBuffer(50, (2, 3), obs_dtype=np.uint8)
    assert buf.nbytes == ReplayBuffer.nbytes_for(50, (2, 3), np.uint8) == 50 * (2 * 6 + 20)


def test_a_buffer_too_big_for_memory_is_a_clear_error_naming_the_bytes(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1_000_000)
    needed = ReplayBuffer.nbytes_for(100_000, OBS_SHAPE)
    with pytest.raises(
        QnormError, match=rf"replay buffer of 100,000 transitions needs .*\({needed:,} bytes\)"
    ):
        ReplayBuffer(100_000, OBS_SHAPE)
    ReplayBuffer(1_000, OBS_SHAPE)  # 32 kB fits
