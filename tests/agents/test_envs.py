"""Env families behind one make_env: dispatch, real MinAtar/Atari envs, extras, learning signal."""

import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from agents.cli import parse_train_config
from agents.config import validate
from agents.envs import (
    EnvFamily,
    LearningSignal,
    check_env_id,
    check_spaces,
    env_family,
    make_env,
    make_vector_env,
    missing_dependency,
    network_kind,
)
from agents.envs.checks import PACKAGE_EXTRAS
from agents.presets import PRESETS, preset_for
from qnorm import QnormError

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"

MINATAR_IDS = [
    f"MinAtar/{game}-v1" for game in ("Asterix", "Breakout", "Freeway", "Seaquest", "SpaceInvaders")
]
CLASSIC = EnvFamily("classic")
ATARI = env_family("ALE/Pong-v5")


@pytest.mark.parametrize(
    ("env_id", "name", "frame_stack", "conv_preset", "clips", "life_loss"),
    [
        ("CartPole-v1", "classic", 0, None, False, False),
        ("MyUserEnv-v0", "classic", 0, None, False, False),
        ("MinAtar/Breakout-v1", "minatar", 0, "minatar", False, False),
        ("ALE/Pong-v5", "atari", 4, "nature", True, True),
        ("ALE/Breakout-v5", "atari", 4, "nature", True, True),
    ],
)
def test_env_family_dispatches_on_the_id_prefix(
    env_id, name, frame_stack, conv_preset, clips, life_loss
):
    assert env_family(env_id) == EnvFamily(name, frame_stack, conv_preset, clips, life_loss)


def test_network_kind_follows_the_observation_rank():
    assert network_kind(gym.spaces.Box(-1, 1, (4,))) == "mlp"
    assert network_kind(gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)) == "conv"
    assert network_kind(gym.spaces.Box(0, 1, (10, 10, 4), bool)) == "conv"
    with pytest.raises(QnormError, match="1-D Box"):
        network_kind(gym.spaces.Box(0, 1, (84, 84)))
    with pytest.raises(QnormError, match="3-D Box"):
        network_kind(gym.spaces.Discrete(3))


def test_check_spaces_names_the_env_and_the_problem():
    with pytest.raises(QnormError, match=r"^Some-v0 has Box.*\(84, 84\).*1-D Box"):
        check_spaces("Some-v0", gym.spaces.Box(0, 1, (84, 84)), gym.spaces.Discrete(2))
    with pytest.raises(QnormError, match="Discrete actions"):
        check_spaces("Some-v0", gym.spaces.Box(0, 1, (4,)), gym.spaces.Box(-1, 1, (1,)))
    check_spaces("Some-v0", gym.spaces.Box(0, 1, (10, 10, 4), bool), gym.spaces.Discrete(2))


class EnvWithoutRenderMode(gym.Env):
    """A user env whose constructor takes no arguments."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self):
        super().__init__()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, dtype=np.float32), {}

    def step(self, action):
        return np.zeros(2, dtype=np.float32), 0.0, True, False, {}


def test_a_user_env_without_render_mode_is_made_as_before(monkeypatch):
    spec = gym.envs.registration.EnvSpec("QnormNoRenderMode-v0", entry_point=EnvWithoutRenderMode)
    monkeypatch.setitem(gym.registry, spec.id, spec)
    env = make_env(spec.id)
    assert env_family(spec.id).name == "classic" and env.reset(seed=0)[0].shape == (2,)
    env.close()


def test_minatar_env_gives_channels_last_bool_images_and_renders_uint8():
    pytest.importorskip("minatar", reason="MinAtar is not installed (extra 'minatar')")
    env = make_env("MinAtar/Breakout-v1", render_mode="rgb_array")
    try:
        obs, _ = env.reset(seed=0)
        assert env.observation_space.shape == obs.shape == (10, 10, 4)
        assert obs.dtype == env.observation_space.dtype == np.bool_
        obs, *_ = env.step(0)
        assert obs.shape == (10, 10, 4) and obs.dtype == np.bool_
        frame = env.render()
        assert frame.dtype == np.uint8 and frame.shape == (160, 160, 3) and frame.max() > 0
    finally:
        env.close()
    envs = make_vector_env("MinAtar/Breakout-v1", 2)
    try:
        obs, _ = envs.reset(seed=0)
        assert obs.shape == (2, 10, 10, 4) and obs.dtype == np.bool_
    finally:
        envs.close()


def test_check_env_id_registers_minatar_ids_first(monkeypatch):
    pytest.importorskip("minatar", reason="MinAtar is not installed (extra 'minatar')")
    for env_id in [env_id for env_id in gym.registry if env_id.startswith("MinAtar/")]:
        monkeypatch.delitem(gym.registry, env_id)
    for env_id in MINATAR_IDS:
        check_env_id(env_id)
    with pytest.raises(QnormError, match="unknown environment id 'MinAtar/Pong-v1'"):
        check_env_id("MinAtar/Pong-v1")


def test_atari_env_gives_stacked_84x84_uint8_frames_lives_and_renders():
    pytest.importorskip("ale_py", reason="ale-py is not installed (extra 'atari')")
    check_env_id("ALE/Pong-v5")
    with pytest.raises(QnormError, match="unknown environment id 'ALE/NoGame-v5'"):
        check_env_id("ALE/NoGame-v5")
    env = make_env("ALE/Pong-v5", render_mode="rgb_array")
    try:
        obs, info = env.reset(seed=0)
        assert env.observation_space.shape == obs.shape == (4, 84, 84)
        assert obs.dtype == env.observation_space.dtype == np.uint8
        assert "lives" in info
        obs, _, _, _, info = env.step(0)
        assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8 and "lives" in info
        assert env.spec.kwargs["frameskip"] == 1  # AtariPreprocessing does the frame skipping
        frame = env.render()
        assert frame.dtype == np.uint8 and frame.shape == (210, 160, 3)
    finally:
        env.close()


def test_atari_life_loss_is_a_learning_terminal_but_not_the_episode_end():
    pytest.importorskip("ale_py", reason="ale-py is not installed (extra 'atari')")
    envs = make_vector_env("ALE/Breakout-v5", 1)
    signal = LearningSignal(env_family("ALE/Breakout-v5"), 1)
    envs.action_space.seed(0)
    _, infos = envs.reset(seed=0)
    lives, just_reset = int(infos["lives"][0]), np.zeros(1, dtype=bool)
    try:
        for _ in range(300):  # random play loses Breakout's first life within ~40 steps
            _, _, terminated, truncated, infos = envs.step(envs.action_space.sample())
            learned = signal.terminated(terminated, infos, just_reset)
            if infos["lives"][0] < lives:
                break
            assert not learned.any()
            just_reset = terminated | truncated
        else:
            pytest.fail("no life was lost in 300 random steps")
    finally:
        envs.close()
    assert learned.all() and not terminated.any() and infos["lives"][0] > 0


def test_missing_minatar_is_one_error_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "minatar", None)
    monkeypatch.setitem(sys.modules, "minatar.gym", None)
    for make in (check_env_id, make_env, lambda env_id: make_vector_env(env_id, 2)):
        with pytest.raises(QnormError, match=r"pip install -e '\.\[minatar\]'$"):
            make("MinAtar/Breakout-v1")


@pytest.mark.parametrize("module", ["ale_py", "cv2"])
def test_missing_ale_or_opencv_is_one_error_naming_the_extra(monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)
    for make in (check_env_id, make_env, lambda env_id: make_vector_env(env_id, 2)):
        with pytest.raises(QnormError, match=r"pip install -e '\.\[atari\]'$"):
            make("ALE/Pong-v5")


def test_missing_box2d_names_the_extra_the_readme_installs():
    # gymnasium's own message suggests its extra; qnorm's README installs qnorm's.
    exc = gym.error.DependencyNotInstalled(
        "Box2D is not installed, you can install it by run `pip install swig` followed by "
        '`pip install "gymnasium[box2d]"`'
    )
    error = missing_dependency("LunarLander-v3", exc)
    assert str(error) == (
        "LunarLander-v3 needs Box2D, which is not installed: pip install -e '.[box2d]'"
    )
    other = missing_dependency("Foo-v0", gym.error.DependencyNotInstalled("mujoco is missing"))
    assert str(other) == "Foo-v0 needs a package that is not installed: mujoco is missing"


def test_every_extra_an_error_names_is_declared_in_pyproject():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    named = {extra for _, _, extra in PACKAGE_EXTRAS} | {"minatar", "atari", "video"}
    assert named <= set(extras)


def test_rewards_are_sign_clipped_for_atari_only():
    rewards = np.array([-3.5, 0.0, 2.0, 0.1])
    np.testing.assert_array_equal(LearningSignal(ATARI, 4).rewards(rewards), [-1, 0, 1, 1])
    for family in (CLASSIC, env_family("MinAtar/Breakout-v1")):
        assert LearningSignal(family, 4).rewards(rewards) is rewards


def steps(signal, *lives_and_resets, terminated=None):
    """The learning terminals of consecutive steps given (lives, just_reset) per step."""
    out = []
    for lives, just_reset in lives_and_resets:
        done = np.zeros(len(lives), dtype=bool) if terminated is None else terminated
        infos = {"lives": np.array(lives), "_lives": np.ones(len(lives), dtype=bool)}
        out.append(signal.terminated(done, infos, np.array(just_reset)).tolist())
    return out


def test_a_lives_drop_is_a_terminal_for_that_env_only():
    signal = LearningSignal(ATARI, 2)
    no = [False, False]
    assert steps(signal, ([3, 3], no), ([2, 3], no), ([2, 3], no), ([2, 1], no)) == [
        [False, False],
        [True, False],
        [False, False],
        [False, True],
    ]


def test_no_false_terminal_on_the_first_step_or_right_after_a_reset():
    signal = LearningSignal(ATARI, 2)
    # First step of a run: lives are unknown before it, even a game without lives (Pong: 0).
    assert steps(signal, ([0, 5], [False, False])) == [[False, False]]
    signal = LearningSignal(ATARI, 2)
    # Env 0 hit the time limit holding a bonus life (6); the step that resets it reports the
    # new game's 5 lives, which is no loss; the step after compares with those 5.
    no, reset_0 = [False, False], [True, False]
    assert steps(signal, ([6, 4], no), ([5, 4], reset_0), ([5, 4], no), ([4, 4], no)) == [
        [False, False],
        [False, False],
        [False, False],
        [True, False],
    ]


def test_real_terminals_pass_through_and_masked_envs_are_ignored():
    signal = LearningSignal(ATARI, 2)
    done = np.array([True, False])
    assert steps(signal, ([3, 3], [False, False]), ([3, 3], [False, False]), terminated=done) == [
        [True, False],
        [True, False],
    ]
    infos = {"lives": np.array([0, 0]), "_lives": np.array([False, True])}
    learned = signal.terminated(np.zeros(2, dtype=bool), infos, np.zeros(2, dtype=bool))
    assert learned.tolist() == [False, True]


def test_terminals_are_untouched_without_life_loss():
    terminated = np.array([False, True])
    infos = {"lives": np.array([0, 0]), "_lives": np.ones(2, dtype=bool)}
    for family in (CLASSIC, env_family("MinAtar/Breakout-v1")):
        signal = LearningSignal(family, 2)
        for lives in ([3, 3], [0, 0]):
            infos["lives"] = np.array(lives)
            assert signal.terminated(terminated, infos, np.zeros(2, dtype=bool)) is terminated
    signal = LearningSignal(ATARI, 2)
    assert signal.terminated(terminated, {}, np.zeros(2, dtype=bool)) is terminated


@pytest.mark.parametrize("env_id", MINATAR_IDS)
def test_every_minatar_game_has_the_minatar_paper_preset(env_id):
    preset = preset_for(env_id)
    assert preset["network.conv_preset"] == env_family(env_id).conv_preset == "minatar"
    assert preset["dqn.optimizer"] == "rmsprop" and preset["dqn.learning_rate"] == 2.5e-4
    assert preset["dqn.double_dqn"] is False and preset["dqn.train_freq"] == 1
    # epsilon reaches 0.1 after the first 100k of 5M frames, as in MinAtar's examples/dqn.py
    assert preset["run.total_timesteps"] * preset["dqn.exploration_fraction"] == 100_000


@pytest.mark.parametrize("env_id", ["ALE/Pong-v5", "ALE/Breakout-v5", "ALE/Seaquest-v5"])
def test_ale_ids_take_the_atari_preset_by_prefix(env_id):
    preset = preset_for(env_id)
    assert preset["network.conv_preset"] == env_family(env_id).conv_preset == "nature"
    assert preset["run.total_timesteps"] == 10_000_000
    assert preset["dqn.learning_starts"] == 100_000 and preset["dqn.train_freq"] == 4
    config = parse_train_config(["--env-id", env_id])
    for key, value in preset.items():
        section, name = key.split(".")
        assert getattr(getattr(config, section), name) == value, key
    validate(config)


def test_an_exact_preset_beats_the_prefix_and_copies_are_returned(monkeypatch):
    monkeypatch.setitem(PRESETS, "ALE/Pong-v5", {"dqn.batch_size": 64})
    assert preset_for("ALE/Pong-v5") == {"dqn.batch_size": 64}
    preset_for("ALE/Breakout-v5")["dqn.batch_size"] = 1
    assert preset_for("ALE/Breakout-v5")["dqn.batch_size"] == 32
    assert preset_for("ALEPong-v5") == {} and preset_for("MinAtar/Pong-v1") == {}
