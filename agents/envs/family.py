"""What a family of environments asks of the learner: frame stack, conv torso, learning signal."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EnvFamily:
    """A family of environments (classic, minatar, atari) and the settings it implies."""

    name: str
    frame_stack: int = 0  # k > 0: observation axis 0 stacks k frames (the frame replay rebuilds it)
    conv_preset: str | None = None  # qnorm's conv torso for its images; None: vector observations
    clip_rewards: bool = False  # learn from the sign of each reward
    life_loss_terminal: bool = False  # a lost life ends bootstrapping (the episode goes on)
