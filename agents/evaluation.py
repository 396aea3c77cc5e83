"""Greedy evaluation of a policy network on fresh episodes, optionally recorded to video."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from agents.checkpoint import Policy, load_policy
from agents.envs import env_module, make_env
from agents.extras import install_command
from agents.snapshot import read_snapshot
from qnorm import QnormError, fold_batchnorm, greedy_action, q_values
from qnorm.recalibration import recalibrate_batch_statistics


@dataclass
class EvalResult:
    """Returns and lengths of evaluation episodes."""

    returns: list[float]
    lengths: list[int]
    # How decisive the greedy choices were, over every state played: the median gap between
    # the best and second-best action's value, and the mean best value (the values' scale).
    median_action_gap: float = float("nan")
    mean_best_value: float = float("nan")
    # The last observation of every episode that terminated (the env ended it: a fall, a
    # crash) rather than running to its time limit: where the policy's failures happen.
    terminal_observations: list[np.ndarray] = field(default_factory=list)
    # {"source", "states", "modules", ...} when running statistics were recomputed first
    recalibration: dict | None = None

    @property
    def mean_return(self) -> float:
        """The mean episodic return."""
        return float(np.mean(self.returns))

    @property
    def std_return(self) -> float:
        """The standard deviation of episodic returns."""
        return float(np.std(self.returns))


def run_episodes(net: nn.Module, env: gym.Env, episodes: int, seed: int) -> EvalResult:
    """Play ``episodes`` greedy episodes; the first reset is seeded, so runs are repeatable."""
    returns, lengths, played, failures = [], [], [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed if episode == 0 else None)
        total, length, terminated, truncated = 0.0, 0, False, False
        while not (terminated or truncated):
            values = q_values(net, obs)
            played.append(values)
            obs, reward, terminated, truncated, _ = env.step(int(values.argmax()))
            total += float(reward)
            length += 1
        returns.append(total)
        lengths.append(length)
        if terminated:
            failures.append(np.asarray(obs))
    return EvalResult(returns, lengths, *decisiveness(torch.stack(played)), failures)


def decisiveness(values: torch.Tensor) -> tuple[float, float]:
    """Over rows of Q-values ``[steps, actions]``: the median gap between the best two
    actions' values, and the mean best value."""
    best_two = values.topk(min(2, values.shape[-1]), dim=-1).values.double().cpu().numpy()
    return float(np.median(best_two[:, 0] - best_two[:, -1])), float(best_two[:, 0].mean())


# Recalibration plays its own episodes, seeded apart from the evaluation's.
RECALIBRATION_SEED_OFFSET = 10_007
RECALIBRATION_SOURCES = ("policy", "replay")


def on_policy_states(net: nn.Module, env: gym.Env, count: int, seed: int) -> np.ndarray:
    """``count`` observations the greedy policy visits, over as many episodes as it takes."""
    states = []
    obs, _ = env.reset(seed=seed)
    while len(states) < count:
        states.append(obs)
        obs, _, terminated, truncated, _ = env.step(greedy_action(net, obs))
        if terminated or truncated:
            obs, _ = env.reset()
    return np.stack(states)


def recalibrate_on_policy(policy: Policy, env_id: str, count: int, seed: int) -> dict:
    """Recompute the policy's running statistics from ``count`` states it visits itself."""
    env = make_eval_env(env_id)
    try:
        states = on_policy_states(policy.network, env, count, seed)
    finally:
        env.close()
    modules = recalibrate_batch_statistics(policy.network, torch.as_tensor(states))
    return {"source": "policy", "states": count, "modules": modules, "seed": seed}


def replay_states(run_dir: Path, count: int) -> tuple[torch.Tensor, int]:
    """The newest ``count`` observations of the replay memory in the run's training-state
    snapshot, oldest first, and the snapshot's step."""
    tensors, state = read_snapshot(run_dir)
    if "replay.obs" not in tensors:  # pixel runs keep frames, not observations
        raise QnormError(
            f"the snapshot in {run_dir} holds no vector replay memory; recalibrate from the "
            "policy's own states instead"
        )
    obs, position = tensors["replay.obs"], int(state["replay"]["position"])
    ordered = torch.cat([obs[position:], obs[:position]])  # a full ring starts at position
    return ordered[-count:], int(state["global_step"])


def recalibrate_from_replay(policy: Policy, count: int) -> dict:
    """Recompute the policy's running statistics from the newest ``count`` states of its
    run's replay memory: the distribution its training batches were drawn from."""
    run_dir = policy.path.parent.parent  # RUN/checkpoints/<name>
    states, step = replay_states(run_dir, count)
    if states.shape[0] < count:
        raise QnormError(
            f"the replay memory of {run_dir} holds {states.shape[0]} states, fewer than {count}"
        )
    modules = recalibrate_batch_statistics(policy.network, states)
    return {"source": "replay", "states": count, "modules": modules, "snapshot_step": step}


def check_env_matches(env: gym.Env, obs_shape: tuple[int, ...], num_actions: int) -> None:
    """Raise a clear error if ``env``'s spaces differ from those the policy was trained on."""
    env_shape = tuple(env.observation_space.shape)
    env_actions = int(env.action_space.n)
    if env_shape != tuple(obs_shape) or env_actions != num_actions:
        raise QnormError(
            f"{env.spec.id if env.spec else 'the env'} has observations {env_shape} and "
            f"{env_actions} actions, but the policy was trained on {tuple(obs_shape)} and "
            f"{num_actions}"
        )


def make_eval_env(env_id: str, video_dir: str | Path | None = None) -> gym.Env:
    """An env for evaluation; with ``video_dir`` every episode is recorded to mp4 there."""
    if video_dir is None:
        return make_env(env_id)
    try:
        import moviepy  # noqa: F401  (gymnasium's recorder needs it)
    except ImportError:
        raise QnormError(f"recording video needs moviepy: {install_command('video')}") from None
    # Frames are drawn off screen: without a display (a server, CI) SDL would otherwise probe
    # for one and print its own "error:" line although recording works. A user's choice wins.
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    env = make_env(env_id, render_mode="rgb_array")
    return gym.wrappers.RecordVideo(
        env,
        str(video_dir),
        episode_trigger=lambda _: True,
        name_prefix="eval",
        disable_logger=True,
    )


def refuse_module_import(env_id: str) -> None:
    """A checkpoint is someone else's data: the env module it names is never imported unasked.

    Importing runs the module's code, which a safetensors checkpoint otherwise never does; the
    user names the env (``--env-id``) to say they trust that module.
    """
    module = env_module(env_id)
    if module is not None:
        raise QnormError(
            f"the checkpoint's env id {env_id!r} would import module {module!r}; qnorm does "
            f"not import code a checkpoint names: pass --env-id {env_id} if you trust it"
        )


def evaluate_checkpoint(
    path: str | Path,
    episodes: int = 10,
    seed: int = 0,
    env_id: str | None = None,
    video_dir: str | Path | None = None,
    fold: bool = True,
    recalibrate: int = 0,
    recalibrate_from: str = "policy",
) -> tuple[Policy, EvalResult]:
    """Load a checkpoint (or a run's final one) and play greedy episodes on its env.

    ``recalibrate`` > 0 first recomputes the network's running statistics from that many
    states, then evaluates: states the policy visits (its own episodes, seeded apart), or
    with ``recalibrate_from="replay"`` the newest states of the run's replay memory (from its
    training-state snapshot).
    """
    _check_arguments(episodes, recalibrate, recalibrate_from)
    policy = load_policy(path)
    if env_id is None:
        refuse_module_import(policy.env_id)
    env = make_eval_env(env_id or policy.env_id, video_dir)
    try:
        check_env_matches(env, policy.obs_shape, policy.spec.num_actions)
        recalibration = None
        if recalibrate:
            source = env_id or policy.env_id
            recalibration = _recalibrate(policy, source, recalibrate, recalibrate_from, seed)
        net = fold_batchnorm(policy.network) if fold else policy.network
        result = run_episodes(net, env, episodes, seed)
        result.recalibration = recalibration
        return policy, result
    finally:
        env.close()


def _check_arguments(episodes: int, recalibrate: int, recalibrate_from: str) -> None:
    if episodes < 1:
        raise QnormError(f"episodes must be positive, got {episodes}")
    if recalibrate < 0 or recalibrate == 1:
        raise QnormError(f"recalibrating needs at least 2 states, got {recalibrate}")
    if recalibrate_from not in RECALIBRATION_SOURCES:
        raise QnormError(
            f"recalibrate from one of {', '.join(RECALIBRATION_SOURCES)}, not {recalibrate_from!r}"
        )


def _recalibrate(policy: Policy, env_id: str, states: int, source: str, seed: int) -> dict:
    """Recompute the running statistics from ``states`` states: the newest of the run's
    replay memory, or the policy's own (its episodes seeded apart from the evaluation's)."""
    if source == "replay":
        return recalibrate_from_replay(policy, states)
    return recalibrate_on_policy(policy, env_id, states, seed + RECALIBRATION_SEED_OFFSET)
