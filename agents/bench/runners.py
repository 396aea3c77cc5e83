"""Timed training runs of one library on one benchmark configuration."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass

import gymnasium as gym
import torch

from agents.bench.configs import BenchConfig
from agents.config import DQNConfig, NetworkConfig, RunConfig, TrainConfig
from agents.training import train
from qnorm import QNetworkSpec, QnormError, build_q_network


@dataclass
class Timing:
    """One timed run: environment steps per second over the whole training call."""

    library: str
    config: str
    norm: str
    seed: int
    seconds: float
    steps: int

    @property
    def sps(self) -> float:
        """Environment steps per second."""
        return self.steps / self.seconds


def qnorm_train_config(bench: BenchConfig, norm: str, seed: int, threads: int, run_dir: str):
    """qnorm's TrainConfig doing exactly the benchmark's work (no evaluation, no progress)."""
    return TrainConfig(
        run=RunConfig(
            env_id=bench.env_id,
            total_timesteps=bench.total_timesteps,
            seed=seed,
            run_dir=run_dir,
            eval_freq=0,
            device="cpu",
            torch_threads=threads,
            progress=False,
        ),
        network=NetworkConfig(hidden_sizes=bench.hidden_sizes, norm=norm),
        dqn=DQNConfig(**bench.dqn_kwargs(), double_dqn=False),
    )


def time_qnorm(bench: BenchConfig, norm: str, seed: int, threads: int) -> Timing:
    """Train qnorm once; the clock covers set-up, training and the final checkpoint."""
    with tempfile.TemporaryDirectory() as tmp:
        config = qnorm_train_config(bench, norm, seed, threads, f"{tmp}/run")
        start = time.perf_counter()
        result = train(config)
        seconds = time.perf_counter() - start
    return Timing("qnorm", bench.name, norm, seed, seconds, result.global_step)


def _import_sb3():
    try:
        import stable_baselines3
    except ImportError:
        raise QnormError(
            "the benchmark needs Stable-Baselines3: pip install -e '.[bench]'"
        ) from None
    return stable_baselines3


def make_sb3_dqn(bench: BenchConfig, norm: str, seed: int):
    """SB3's DQN with the benchmark's settings; its MLP carries the same norm layers as qnorm's."""
    sb3 = _import_sb3()
    from stable_baselines3.common.utils import get_parameters_by_name

    model = sb3.DQN(
        "MlpPolicy",
        gym.make(bench.env_id),
        **bench.dqn_kwargs(),
        policy_kwargs={"net_arch": list(bench.hidden_sizes)},
        seed=seed,
        device="cpu",
        verbose=0,
    )
    if norm != "none":
        # Same layers as qnorm's network, so both libraries do identical arithmetic.
        policy = model.policy
        obs_dim = int(model.observation_space.shape[0])
        spec = QNetworkSpec(obs_dim, int(model.action_space.n), bench.hidden_sizes, norm=norm)
        policy.q_net.q_net = build_q_network(spec).layers
        policy.q_net_target.q_net = build_q_network(spec).layers
        policy.q_net_target.load_state_dict(policy.q_net.state_dict())
        policy.q_net_target.set_training_mode(False)
        policy.optimizer = policy.optimizer_class(
            policy.q_net.parameters(), lr=bench.learning_rate, **policy.optimizer_kwargs
        )
        model._create_aliases()
        model.batch_norm_stats = get_parameters_by_name(model.q_net, ["running_"])
        model.batch_norm_stats_target = get_parameters_by_name(model.q_net_target, ["running_"])
    return model


def time_sb3(bench: BenchConfig, norm: str, seed: int, threads: int) -> Timing:
    """Train SB3 once; the clock covers building the model and ``learn``."""
    _import_sb3()
    torch.set_num_threads(threads)
    start = time.perf_counter()
    model = make_sb3_dqn(bench, norm, seed)
    model.learn(total_timesteps=bench.total_timesteps)
    seconds = time.perf_counter() - start
    return Timing("sb3", bench.name, norm, seed, seconds, int(model.num_timesteps))
