"""What the learner sees of a step: the family's reward clipping and life-loss terminals.

Both change training transitions only. Episodes, logged returns and evaluation play whole
games and score them with the raw game reward.
"""

from __future__ import annotations

import numpy as np

from agents.envs.family import EnvFamily


class LearningSignal:
    """The rewards and terminals to store for one vector env's steps (identity when unused)."""

    def __init__(self, family: EnvFamily, num_envs: int) -> None:
        self.family = family
        # Lives after each env's previous step; -1 until the first step, so it is never a loss.
        self.lives = np.full(num_envs, -1, dtype=np.int64)

    def rewards(self, rewards: np.ndarray) -> np.ndarray:
        """Each reward's sign when the family clips rewards, else ``rewards`` themselves."""
        return np.sign(rewards) if self.family.clip_rewards else rewards

    def terminated(self, terminated: np.ndarray, infos: dict, just_reset: np.ndarray) -> np.ndarray:
        """``terminated``, and for life-loss families also where an env lost a life this step.

        Call it on every step, those that only reset an env included (``just_reset``), so that
        each env's lives are known: a reset's fresh lives never count as a loss.
        """
        if not self.family.life_loss_terminal or "lives" not in infos:
            return terminated
        lives = np.asarray(infos["lives"])
        lost = (lives < self.lives) & ~np.asarray(just_reset, dtype=bool)
        if "_lives" in infos:  # a vector env's mask of the envs that reported lives
            lost &= infos["_lives"]
            self.lives = np.where(infos["_lives"], lives, self.lives)
        else:
            self.lives = lives.astype(np.int64)
        return terminated | lost if lost.any() else terminated
