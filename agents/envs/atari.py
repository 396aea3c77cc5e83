"""The Atari family (``ALE/<Game>-v5``): Nature DQN preprocessing, extra ``atari``.

The base env keeps its registered sticky actions (ALE v5: repeat_action_probability 0.25) and
skips no frames itself; gymnasium's ``AtariPreprocessing`` then skips 4 frames (max-pooling the
last two), starts with up to 30 no-ops, and gives 84x84 grayscale frames, which
``FrameStackObservation`` stacks by 4: observations are (4, 84, 84) uint8. Episodes are whole
games; life-loss terminals and reward clipping are for learning only (``learning_signal``).
"""

from __future__ import annotations

from functools import partial

import gymnasium as gym

from agents.envs.checks import missing_extra
from agents.envs.family import EnvFamily

FAMILY = EnvFamily(
    "atari", frame_stack=4, conv_preset="nature", clip_rewards=True, life_loss_terminal=True
)
BASE_KWARGS: dict[str, object] = {"frameskip": 1}
WRAPPERS = (
    partial(
        gym.wrappers.AtariPreprocessing,
        frame_skip=4,
        screen_size=84,
        grayscale_obs=True,
        noop_max=30,
        terminal_on_life_loss=False,
    ),
    partial(gym.wrappers.FrameStackObservation, stack_size=FAMILY.frame_stack),
)


def register(env_id: str) -> None:
    """Register the ALE's gymnasium ids (importing ale_py does it; ROMs ship in its wheel)."""
    try:
        import ale_py
        import cv2  # noqa: F401  (AtariPreprocessing resizes frames with OpenCV)
    except ImportError:
        raise missing_extra(env_id, "ale-py and OpenCV", "atari") from None
    gym.register_envs(ale_py)
