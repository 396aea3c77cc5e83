"""The MinAtar family (``MinAtar/<Game>-v1``): 10x10 channels-last bool images, extra ``minatar``.

The games are used as MinAtar ships them (sticky actions 0.1, difficulty ramping), as in the
MinAtar paper (Young & Tian 2019); reward clipping and life-loss terminals do not apply.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from agents.envs.checks import missing_extra
from agents.envs.family import EnvFamily

FAMILY = EnvFamily("minatar", conv_preset="minatar")
BASE_KWARGS: dict[str, object] = {}
RENDER_SCALE = 16  # a 10x10 frame is too small to watch: each cell becomes 16x16 pixels


def register(env_id: str) -> None:
    """Register MinAtar's gymnasium ids unless they already are."""
    try:
        import minatar.gym as minatar_gym
    except ImportError:
        raise missing_extra(env_id, "MinAtar", "minatar") from None
    if "MinAtar/Breakout-v1" not in gym.registry:
        minatar_gym.register_envs()


class Uint8Render(gym.Wrapper):
    """MinAtar's ``rgb_array`` frames as enlarged uint8 images, which video recorders expect."""

    def render(self):
        """The frame in [0, 255], each cell ``RENDER_SCALE`` pixels wide; other modes unchanged."""
        if self.render_mode != "rgb_array":
            return self.env.render()
        # The unwrapped render skips the env checker's warning about MinAtar's float frames.
        frame = np.round(np.asarray(self.env.unwrapped.render()) * 255).astype(np.uint8)
        return frame.repeat(RENDER_SCALE, axis=0).repeat(RENDER_SCALE, axis=1)


WRAPPERS = (Uint8Render,)
