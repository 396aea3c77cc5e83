"""Exploration schedules."""

from __future__ import annotations


def linear_epsilon(
    step: int, total_timesteps: int, fraction: float, initial_eps: float, final_eps: float
) -> float:
    """Epsilon falling linearly from initial to final over ``fraction`` of training."""
    progress = step / total_timesteps
    if progress >= fraction:
        return final_eps
    return initial_eps + (final_eps - initial_eps) * progress / fraction
