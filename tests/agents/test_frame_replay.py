"""The frame replay: each frame stored once, yet every sample is exactly what the env returned."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.wrappers import FrameStackObservation

from agents import memory
from agents.frame_replay import FrameReplayBuffer
from agents.replay import Batch
from qnorm import QnormError

STACK = 4
EPISODE_LENGTHS = (5, 3, 7, 2)  # even episodes end terminated, odd ones truncated


class FakeImageEnv(gym.Env):
    """Deterministic random frames; pixel (0, 0) names the env's episode, the reward the step."""

    def __init__(self, env_index: int, shape: tuple[int, ...], dtype) -> None:
        self.env_index, self.shape, self.dtype = env_index, shape, np.dtype(dtype)
        high = 1 if self.dtype == bool else 255
        self.observation_space = gym.spaces.Box(0, high, shape, self.dtype)
        self.action_space = gym.spaces.Discrete(3)
        self.episode, self.t, self.steps = -1, 0, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode, self.t = self.episode + 1, 0
        return self.frame(), {}

    def step(self, action):
        self.t += 1
        self.steps += 1
        ended = self.t >= EPISODE_LENGTHS[self.episode % len(EPISODE_LENGTHS)]
        terminated = ended and self.episode % 2 == 0
        reward = float(self.env_index * 100_000 + self.steps)  # names the transition
        return self.frame(), reward, terminated, ended and not terminated, {}

    def frame(self) -> np.ndarray:
        rng = np.random.default_rng((self.env_index, self.episode, self.t))
        if self.dtype == bool:
            return rng.random(self.shape) < 0.5
        frame = rng.integers(0, 256, self.shape, dtype=self.dtype)
        frame[0, 0] = self.env_index * 50 + self.episode
        return frame


def atari_like(num_envs: int = 2) -> SyncVectorEnv:
    """Stacks of 4 uint8 frames, channels first, as FrameStackObservation builds them."""
    return SyncVectorEnv(
        [
            lambda i=i: FrameStackObservation(FakeImageEnv(i, (6, 5), np.uint8), STACK)
            for i in range(num_envs)
        ],
        autoreset_mode=AutoresetMode.NEXT_STEP,
    )


def minatar_like(num_envs: int = 2) -> SyncVectorEnv:
    """(10, 10, 4) bool observations, channels last, no frame stack."""
    return SyncVectorEnv(
        [lambda i=i: FakeImageEnv(i, (10, 10, 4), bool) for i in range(num_envs)],
        autoreset_mode=AutoresetMode.NEXT_STEP,
    )


KINDS = {"atari": (atari_like, STACK, np.uint8), "minatar": (minatar_like, 0, bool)}


def make_buffer(kind: str, capacity: int, num_envs: int = 2, seed: int = 0):
    envs_fn, frame_stack, dtype = KINDS[kind]
    envs = envs_fn(num_envs)
    shape = envs.single_observation_space.shape
    buffer = FrameReplayBuffer(
        capacity, shape, dtype, seed=seed, num_envs=num_envs, frame_stack=frame_stack
    )
    return envs, buffer


def collect(buffer, envs, steps: int, seed: int = 0, after_add=None) -> list[tuple]:
    """Step ``envs`` and add transitions as Trainer.collect does; return them in order added."""
    rng = np.random.default_rng(seed)
    obs, _ = envs.reset(seed=seed)
    just_reset = np.zeros(envs.num_envs, dtype=bool)
    added = []
    for _ in range(steps):
        actions = rng.integers(3, size=envs.num_envs)
        next_obs, rewards, terminated, truncated, _ = envs.step(actions)
        keep = ~just_reset  # the step that crosses a next-step autoreset is never stored
        if keep.any():
            ids = np.flatnonzero(keep)
            buffer.add(
                obs[keep],
                actions[keep],
                rewards[keep],
                next_obs[keep],
                terminated[keep],
                truncated[keep],
                env_ids=ids,
            )
            for i in ids:
                added.append(
                    (
                        int(i),
                        obs[i],
                        actions[i],
                        rewards[i],
                        next_obs[i],
                        terminated[i],
                        truncated[i],
                    )
                )
            if after_add is not None:
                after_add(added)
        obs, just_reset = next_obs, terminated | truncated
    envs.close()
    return added


def assert_samples_are_added_transitions(batch: Batch, added: list[tuple]) -> set[float]:
    """Every sampled row equals, field by field, the transition its reward names."""
    by_reward = {float(t[3]): t for t in added}
    seen = set()
    for row in range(batch.rewards.shape[0]):
        reward = float(batch.rewards[row])
        _, obs, action, _, next_obs, terminated, truncated = by_reward[reward]
        np.testing.assert_array_equal(batch.obs[row].numpy(), obs)
        np.testing.assert_array_equal(batch.next_obs[row].numpy(), next_obs)
        assert int(batch.actions[row]) == action
        assert float(batch.terminated[row]) == float(terminated)
        assert float(batch.truncated[row]) == float(truncated)
        seen.add(reward)
    return seen


def flat(batch: Batch) -> Batch:
    return Batch(*(None if f is None else f.reshape(-1, *f.shape[2:]) for f in batch))


def expected_live(added: list[tuple], buffer: FrameReplayBuffer) -> set[float]:
    """The rewards of the transitions whose frames are all still stored (an independent model)."""
    window, sizes = buffer.window, buffer.layout.ring_sizes
    written = [0] * buffer.num_envs
    starts = [True] * buffer.num_envs
    positions = []
    for env, *_, reward, _, terminated, truncated in added:
        if starts[env]:
            written[env] += window
        positions.append((env, written[env], float(reward)))
        written[env] += 1
        starts[env] = bool(terminated or truncated)
    return {r for env, p, r in positions if p - window >= written[env] - sizes[env]}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_samples_equal_exactly_what_the_envs_returned(kind):
    envs, buffer = make_buffer(kind, capacity=400)
    added = collect(buffer, envs, steps=60)
    assert len(buffer) == len(added)  # nothing evicted yet
    assert any(t[5] for t in added) and any(t[6] for t in added)  # both kinds of episode end
    seen = assert_samples_are_added_transitions(flat(buffer.sample_batches(20, 64)), added)
    assert seen == {float(t[3]) for t in added}  # every stored transition can be drawn


def test_no_sampled_stack_crosses_an_episode_boundary():
    envs, buffer = make_buffer("atari", capacity=60)
    collect(buffer, envs, steps=120)  # wraps around several times
    batch = flat(buffer.sample_batches(40, 16))
    obs_episode = batch.obs[:, :, 0, 0]  # [B, STACK]: the episode each frame came from
    next_episode = batch.next_obs[:, :, 0, 0]
    assert (obs_episode == obs_episode[:, :1]).all()
    assert (next_episode == obs_episode[:, :1]).all()
    assert len(obs_episode[:, 0].unique()) > 4  # many episodes were drawn


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_after_wrap_around_only_fully_stored_transitions_are_sampled(kind):
    envs, buffer = make_buffer(kind, capacity=14, seed=1)

    def check_size(added):
        assert len(buffer) == len(expected_live(added, buffer)) <= buffer.capacity

    added = collect(buffer, envs, steps=150, after_add=check_size)
    assert len(added) > 10 * buffer.capacity  # wrapped around many times
    seen = assert_samples_are_added_transitions(flat(buffer.sample_batches(200, 5)), added)
    assert seen == expected_live(added, buffer)  # exactly the live ones, each one reachable


def stream(length: int, start: int = 0, frame_stack: int = STACK, terminated_at_end=True):
    """One episode of ``length`` transitions of (k, 3, 2) uint8 stacks whose frames count up."""
    frames = np.arange(start, start + length + frame_stack, dtype=np.uint8)
    frames = np.broadcast_to(frames[:, None, None], (len(frames), 3, 2))
    obs = np.stack([frames[t : t + frame_stack] for t in range(length + 1)])
    done = np.zeros(length, dtype=bool)
    done[-1] = terminated_at_end
    rewards = np.arange(start, start + length, dtype=np.float32)
    actions = np.arange(length) % 3
    return obs[:-1], actions, rewards, obs[1:], done, np.zeros(length, dtype=bool)


def add_rows(buffer, episode, env_ids=None):
    for row in zip(*episode, strict=True):
        buffer.add(*row, env_ids=env_ids)


def test_a_long_episode_fills_the_whole_capacity_with_its_newest_transitions():
    buffer = FrameReplayBuffer(10, (STACK, 3, 2), np.uint8, frame_stack=STACK)
    add_rows(buffer, stream(30, terminated_at_end=False))
    assert len(buffer) == 10
    rewards = buffer.sample_batches(40, 10).rewards.unique().tolist()
    assert rewards == list(range(20, 30))


def test_sampling_is_roughly_uniform_over_stored_transitions():
    buffer = FrameReplayBuffer(40, (STACK, 3, 2), np.uint8, seed=3, frame_stack=STACK)
    add_rows(buffer, stream(12, start=0))
    add_rows(buffer, stream(8, start=100))  # a second episode: its first frames are not samples
    rewards = buffer.sample_batches(200, 20).rewards.flatten().long().numpy()
    values, counts = np.unique(rewards, return_counts=True)
    assert values.tolist() == [*range(12), *range(100, 108)]
    assert np.all(np.abs(counts - 200) < 60), counts


def test_sampling_is_reproducible_with_the_same_seed():
    def draws(seed):
        buffer = FrameReplayBuffer(50, (STACK, 3, 2), np.uint8, seed=seed, frame_stack=STACK)
        add_rows(buffer, stream(40))
        return torch.cat([buffer.sample_batches(2, 16).rewards.flatten() for _ in range(3)])

    assert torch.equal(draws(7), draws(7))
    assert not torch.equal(draws(7), draws(8))


def test_batch_fields_have_the_replay_buffer_shapes_and_dtypes():
    buffer = FrameReplayBuffer(30, (STACK, 3, 2), np.uint8, frame_stack=STACK)
    add_rows(buffer, stream(10, start=200))
    batch = buffer.sample_batches(3, 5)
    assert isinstance(batch, Batch)
    assert batch.obs.shape == batch.next_obs.shape == (3, 5, STACK, 3, 2)
    assert batch.obs.dtype == batch.next_obs.dtype == torch.uint8
    assert batch.actions.shape == (3, 5) and batch.actions.dtype == torch.int64
    for column in (batch.rewards, batch.terminated, batch.truncated):
        assert column.shape == (3, 5) and column.dtype == torch.float32
    # values above 127 survive; each stack counts up from its reward, next_obs one further
    assert torch.equal(batch.obs[..., 0, 0, 0].float(), batch.rewards)
    assert torch.equal(batch.next_obs[..., 0, 0, 0].float(), batch.rewards + 1)
    assert torch.equal(batch.terminated, (batch.rewards == 209).float())
    single = buffer.sample(4)
    assert single.obs.shape == (4, STACK, 3, 2) and single.rewards.shape == (4,)


def test_unbatched_add_equals_batched_add():
    episode = stream(6, frame_stack=1)
    episode = (episode[0][:, 0], *episode[1:3], episode[3][:, 0], *episode[4:])  # (3, 2) frames
    batched = FrameReplayBuffer(10, (3, 2), np.uint8, num_envs=1)
    one_by_one = FrameReplayBuffer(10, (3, 2), np.uint8, num_envs=1)
    for row in zip(*episode, strict=True):
        batched.add(*(column[None] for column in row))
        one_by_one.add(*row)
    assert len(batched) == len(one_by_one) == 6
    for a, b in zip(
        batched.sample_batches(2, 6).tensors(),
        one_by_one.sample_batches(2, 6).tensors(),
        strict=True,
    ):
        assert torch.equal(a, b)


def test_bytes_per_transition_is_about_one_frame():
    atari = FrameReplayBuffer.nbytes_for(1_000_000, (4, 84, 84), np.uint8, frame_stack=4)
    assert atari / 1_000_000 < 84 * 84 + 64
    minatar = FrameReplayBuffer.nbytes_for(1_000_000, (10, 10, 4), bool)
    assert minatar / 1_000_000 < 10 * 10 * 4 + 64
    buffer = FrameReplayBuffer(100_000, (4, 84, 84), np.uint8, num_envs=4, frame_stack=4)
    assert buffer.nbytes == FrameReplayBuffer.nbytes_for(100_000, (4, 84, 84), "uint8", 4, 4)
    assert buffer.bytes_per_transition == buffer.nbytes / 100_000 < 84 * 84 + 64


def test_a_buffer_too_big_for_memory_is_a_clear_error_naming_the_bytes(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device: 10_000_000)
    needed = FrameReplayBuffer.nbytes_for(10_000, (4, 84, 84), np.uint8, frame_stack=4)
    with pytest.raises(QnormError, match=r"needs [0-9.]+ MiB") as caught:
        FrameReplayBuffer(10_000, (4, 84, 84), np.uint8, frame_stack=4)
    assert f"({needed:,} bytes)" in str(caught.value)
    assert "(10,000,000 bytes) is available on cpu" in str(caught.value)
    FrameReplayBuffer(1_000, (4, 84, 84), np.uint8, frame_stack=4)  # 7 MB fits


def test_on_a_gpu_the_frames_are_checked_against_gpu_memory(monkeypatch):
    free = {"cpu": 10**12, "cuda": 1_000_000}
    monkeypatch.setattr(memory, "available_bytes", lambda device: free[torch.device(device).type])
    with pytest.raises(QnormError, match=r"the frames of .* is available on cuda"):
        FrameReplayBuffer(1_000, (4, 84, 84), np.uint8, device="cuda", frame_stack=4)


def test_available_memory_is_read_from_meminfo_and_unknown_memory_passes(tmp_path, monkeypatch):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  8000 kB\nMemFree:  1000 kB\nMemAvailable:  3000 kB\n")
    monkeypatch.setattr(memory, "MEMINFO", str(meminfo))
    assert memory.available_bytes("cpu") == 3000 * 1024
    with pytest.raises(QnormError, match=r"\(3,072,000 bytes\)"):
        memory.check_fits(3000 * 1024 + 1, "cpu", "a thing")
    memory.check_fits(3000 * 1024, "cpu", "a thing")
    monkeypatch.setattr(memory, "MEMINFO", str(tmp_path / "missing"))
    assert memory.available_bytes("cpu") is None
    memory.check_fits(10**18, "cpu", "a thing")  # unknown: the check passes


def test_gpu_memory_comes_from_cuda_mem_get_info(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (5_000, 9_000))
    assert memory.available_bytes("cuda") == 5_000
    with pytest.raises(QnormError, match=r"\(5,000 bytes\) is available on cuda"):
        memory.check_fits(6_000, "cuda", "a replay buffer")


def good_rows(n=2):
    obs = np.zeros((n, STACK, 3, 2), np.uint8)
    return {
        "obs": obs,
        "actions": np.zeros(n, np.int64),
        "rewards": np.zeros(n, np.float32),
        "next_obs": obs.copy(),
        "terminated": np.zeros(n, bool),
        "truncated": np.zeros(n, bool),
    }


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"obs": np.zeros((2, STACK, 3, 3), np.uint8)}, "shape"),
        ({"next_obs": np.zeros((2, 3, 2), np.uint8)}, "shape"),
        ({"actions": np.zeros(3, np.int64)}, "shape"),
        ({"rewards": np.zeros((2, 1), np.float32)}, "shape"),
        ({"terminated": np.zeros(1, bool)}, "shape"),
        ({"truncated": np.zeros(5, bool)}, "shape"),
        ({"obs": np.zeros((2, STACK, 3, 2), np.float32)}, "dtype float32"),
        ({"next_obs": np.zeros((2, STACK, 3, 2), np.float64)}, "dtype float64"),
        ({"actions": np.zeros(2, np.float32)}, "integers"),
        ({"env_ids": [0, 2]}, r"lie in \[0, 2\)"),
        ({"env_ids": [1, 1]}, "twice"),
        ({"env_ids": [0]}, "2 integer env indices"),
        ({"env_ids": [0.0, 1.0]}, "integer"),
    ],
)
def test_bad_transitions_are_clear_errors_and_write_nothing(bad, match):
    buffer = FrameReplayBuffer(8, (STACK, 3, 2), np.uint8, num_envs=2, frame_stack=STACK)
    rows = good_rows() | bad
    with pytest.raises(QnormError, match=match):
        buffer.add(**rows)
    assert len(buffer) == 0
    buffer.add(**good_rows())  # the failed call left the streams as they were
    assert len(buffer) == 2


def test_more_rows_than_envs_is_a_clear_error():
    buffer = FrameReplayBuffer(8, (STACK, 3, 2), np.uint8, num_envs=2, frame_stack=STACK)
    with pytest.raises(QnormError, match=r"3 transitions at once .* 2 env streams"):
        buffer.add(**good_rows(3))


def test_an_observation_that_does_not_continue_its_stream_is_a_clear_error():
    buffer = FrameReplayBuffer(20, (STACK, 3, 2), np.uint8, num_envs=2, frame_stack=STACK)
    first, second = stream(5, start=0), stream(5, start=50)
    buffer.add(*(np.concatenate([a[:1], b[:1]]) for a, b in zip(first, second, strict=True)))
    # env 1's next row given alone without env_ids lands in env 0's stream
    with pytest.raises(QnormError, match=r"env 0 .*pass env_ids"):
        buffer.add(*(column[1:2] for column in second))
    buffer.add(*(column[1:2] for column in second), env_ids=[1])
    assert len(buffer) == 3


def test_observations_of_another_integer_dtype_are_stored_cast():
    buffer = FrameReplayBuffer(10, (STACK, 3, 2), np.uint8, frame_stack=STACK)
    episode = stream(4, start=10)
    for row in zip(*episode, strict=True):
        obs, action, reward, next_obs, term, trunc = row
        buffer.add(obs.astype(np.int64), action, reward, next_obs.astype(np.int64), term, trunc)
    assert len(buffer) == 4
    batch = buffer.sample(4)
    assert batch.obs.dtype == torch.uint8
    assert torch.equal(batch.obs[:, 0, 0, 0].float(), batch.rewards)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"capacity": 0}, "capacity must be positive"),
        ({"num_envs": 0}, "num_envs must be positive"),
        ({"capacity": 3, "num_envs": 4}, "below num_envs 4"),
        ({"frame_stack": -1}, "frame_stack must be 0 or more"),
        ({"frame_stack": 3}, r"shaped \(3, ...\)"),
    ],
)
def test_bad_buffer_arguments_are_clear_errors(kwargs, match):
    arguments = {"capacity": 10, "obs_shape": (STACK, 3, 2), "obs_dtype": np.uint8} | kwargs
    with pytest.raises(QnormError, match=match):
        FrameReplayBuffer(**arguments)


def test_sampling_more_than_stored_is_a_clear_error():
    buffer = FrameReplayBuffer(10, (STACK, 3, 2), np.uint8, frame_stack=STACK)
    with pytest.raises(QnormError, match="holding 0"):
        buffer.sample(1)
    add_rows(buffer, stream(3))
    with pytest.raises(QnormError, match="cannot sample 4 transitions from a buffer holding 3"):
        buffer.sample(4)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_tensor_write_path_of_gpus_stores_what_numpy_writes_store(kind):
    envs, numpy_writes = make_buffer(kind, capacity=30)
    collect(numpy_writes, envs, steps=80)
    envs, tensor_writes = make_buffer(kind, capacity=30)
    tensor_writes._frames_host = None  # take the path a GPU buffer takes (no GPU needed)
    collect(tensor_writes, envs, steps=80)
    assert torch.equal(numpy_writes.frames, tensor_writes.frames)
    for a, b in zip(
        numpy_writes.sample_batches(4, 8).tensors(),
        tensor_writes.sample_batches(4, 8).tensors(),
        strict=True,
    ):
        assert torch.equal(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_on_the_gpu_samples_equal_the_cpu_samples(kind):
    envs, cpu = make_buffer(kind, capacity=30)
    added = collect(cpu, envs, steps=80)
    envs_fn, frame_stack, dtype = KINDS[kind]
    gpu = FrameReplayBuffer(30, cpu.obs_shape, dtype, "cuda", num_envs=2, frame_stack=frame_stack)
    collect(gpu, envs_fn(2), steps=80)
    on_cpu, on_gpu = cpu.sample_batches(4, 16), gpu.sample_batches(4, 16)
    assert all(field.device.type == "cuda" for field in on_gpu.tensors())
    for a, b in zip(on_cpu.tensors(), on_gpu.tensors(), strict=True):
        assert torch.equal(a, b.cpu())
    assert_samples_are_added_transitions(flat(on_cpu), added)
