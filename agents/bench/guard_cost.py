"""What the NaN guard costs the training loop, two ways.

1. Counted: each check timed alone on the inputs a CartPole run gives it, times how often a
   run calls it, over the run's own time. Precise, since no run-to-run noise enters it.
2. Side by side: the same run with the guard's checks and without them, alternating, the
   median ratio of their steps per second. Honest, but noisy on a busy machine.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import replace
from unittest import mock

import numpy as np
import torch

from agents.bench.configs import CONFIGS
from agents.bench.runners import qnorm_train_config
from agents.finite_guard import FiniteGuard
from agents.training import train


def per_call_seconds(function, calls: int = 20_000) -> float:
    """Median seconds of one call over five timed batches."""
    batches = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            function()
        batches.append((time.perf_counter() - start) / calls)
    return statistics.median(batches)


def timed_run(config_name: str, steps: int, guarded: bool) -> tuple[float, int, int]:
    """Seconds, env steps and update phases of one run, with or without the guard's checks."""
    bench = replace(CONFIGS[config_name], total_timesteps=steps)
    calls = {"check_update": 0}
    real_update = FiniteGuard.check_update

    def counted_update(self, td_loss, step):
        calls["check_update"] += 1
        if guarded:
            real_update(self, td_loss, step)

    patches = [mock.patch.object(FiniteGuard, "check_update", counted_update)]
    if not guarded:
        patches.append(mock.patch.object(FiniteGuard, "check_env", lambda *a: None))
    with tempfile.TemporaryDirectory() as tmp:
        config = qnorm_train_config(bench, "none", 0, 1, f"{tmp}/run")
        config.run.state_freq = 0  # time the loop, not the snapshot
        for patch in patches:
            patch.start()
        try:
            start = time.perf_counter()
            result = train(config)
            seconds = time.perf_counter() - start
        finally:
            for patch in patches:
                patch.stop()
    return seconds, result.global_step, calls["check_update"]


def report(out, config_names: list[str], steps: int, repeats: int) -> None:
    """Print the guard's share of each config's training time, counted and side by side."""
    torch.set_num_threads(1)
    guard = FiniteGuard("CartPole-v1")
    obs, rewards = np.zeros((1, 4), dtype=np.float32), np.ones(1)
    env_cost = per_call_seconds(lambda: guard.check_env(obs, rewards, 0))
    loss = torch.tensor(0.5)
    update_cost = per_call_seconds(lambda: guard.check_update(loss, 0))
    out(
        f"guard per call: check_env {env_cost * 1e6:.2f} us (every env step), "
        f"check_update {update_cost * 1e6:.2f} us (every update phase)"
    )
    for name in config_names:
        guarded, bare = [], []
        for repeat in range(repeats):  # alternating, first one then the other first
            for with_guard in (True, False) if repeat % 2 == 0 else (False, True):
                (guarded if with_guard else bare).append(timed_run(name, steps, with_guard))
        seconds = statistics.median(t[0] for t in guarded)
        runs_steps, phases = guarded[0][1], guarded[0][2]
        counted = (runs_steps * env_cost + phases * update_cost) / seconds
        ratios = [b[0] / g[0] for g, b in zip(guarded, bare, strict=True)]
        out(
            f"{name}: {runs_steps:,} steps at {runs_steps / seconds:,.0f} SPS, "
            f"{phases:,} update phases; guard counted {counted:.2%} of the run's time; "
            f"side by side SPS with/without guard {statistics.median(ratios):.3f} "
            f"(median of {repeats}, range {min(ratios):.3f}-{max(ratios):.3f})"
        )
