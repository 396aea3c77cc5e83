"""Exploration and learning-rate schedules."""

from __future__ import annotations


def linear_epsilon(
    step: int, total_timesteps: int, fraction: float, initial_eps: float, final_eps: float
) -> float:
    """Epsilon falling linearly from initial to final over ``fraction`` of training."""
    progress = step / total_timesteps
    if progress >= fraction:
        return final_eps
    return initial_eps + (final_eps - initial_eps) * progress / fraction


LR_SCHEDULES = ("constant", "linear")


def learning_rate_at(step: int, total_timesteps: int, base: float, schedule: str) -> float:
    """The learning rate at env step ``step``: ``base``, or falling linearly to 0 at the end."""
    if schedule == "constant":
        return base
    return base * max(0.0, 1.0 - step / total_timesteps)
