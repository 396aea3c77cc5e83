"""CNN latencies: acting on one image, one update step, and eval forwards with BatchNorm folded.

Each network, agent and optimizer is built the way training builds it for the env's preset
(``config_from_flags`` then ``network_spec``), from the observation space alone: no env runs.
The variants of one measurement take turns in one process, so their ratios are side by side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from gymnasium import spaces

from agents.bench.latency import interleaved_median_us
from agents.cli import config_from_flags
from agents.config import TrainConfig
from agents.dqn import DQNAgent
from agents.envs import env_family
from agents.network_specs import network_spec
from agents.replay import Batch
from qnorm import acting_mode, fold_batchnorm


@dataclass(frozen=True)
class PixelCase:
    """One conv network on the observations of the env whose preset configures it."""

    net: str  # the conv preset, as printed
    env_id: str  # whose preset supplies the network and the DQN settings
    obs_shape: tuple[int, ...]
    obs_dtype: str
    num_actions: int

    def observation_space(self) -> spaces.Box:
        """The env's observation space."""
        high = 1 if self.obs_dtype == "bool" else 255
        return spaces.Box(0, high, self.obs_shape, np.dtype(self.obs_dtype))

    def observations(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` random observations ``[n, *obs_shape]`` in the env's dtype."""
        rng = np.random.default_rng(seed)
        if self.obs_dtype == "bool":
            return rng.random((n, *self.obs_shape)) < 0.1  # MinAtar grids are mostly empty
        return rng.integers(0, 256, (n, *self.obs_shape), dtype=np.uint8)


PIXEL_CASES = (
    PixelCase("minatar", "MinAtar/Breakout-v1", (10, 10, 4), "bool", 3),
    PixelCase("nature", "ALE/Pong-v5", (4, 84, 84), "uint8", 6),
)

# Printed name -> (norm, norm_target) of the network.
NORM_VARIANTS: dict[str, tuple[str, str]] = {
    "none": ("none", "both"),
    "batchnorm": ("batchnorm", "both"),
    "bn torso": ("batchnorm", "torso"),
}
FOLDED_SUFFIX = " folded"


@dataclass(frozen=True)
class Budget:
    """How long to time: interleaved repeats, each about ``seconds`` per variant."""

    repeats: int = 7
    seconds: float = 0.25


def train_config(case: PixelCase, norm: str, norm_target: str) -> TrainConfig:
    """The env's preset with this norm, as ``scripts/train.py`` would configure it."""
    flags = {"run.env_id": case.env_id, "run.device": "cpu"}
    flags.update({"network.norm": norm, "network.norm_target": norm_target})
    return config_from_flags(flags)


def make_agent(case: PixelCase, variant: str) -> DQNAgent:
    """The DQN agent training would build for ``case`` with the norm ``variant``."""
    config = train_config(case, *NORM_VARIANTS[variant])
    preset = env_family(case.env_id).conv_preset
    spec = network_spec(config, case.observation_space(), case.num_actions, preset)
    agent = DQNAgent(spec, config.dqn, "cpu", seed=0)
    _move_running_statistics(agent.online, case)
    agent.sync_target()
    return agent


def _move_running_statistics(net: torch.nn.Module, case: PixelCase) -> None:
    """A few train-mode forwards, so norm running statistics are off their initial values."""
    obs = torch.as_tensor(case.observations(64, seed=1))
    with torch.no_grad():
        for _ in range(3):
            net.train()(obs)
    net.eval()


def random_batch(case: PixelCase, batch_size: int, seed: int = 0) -> Batch:
    """A minibatch shaped and typed as the frame replay samples it."""
    g = torch.Generator().manual_seed(seed)
    return Batch(
        torch.as_tensor(case.observations(batch_size, seed)),
        torch.randint(0, case.num_actions, (batch_size,), generator=g),
        torch.randn(batch_size, generator=g),
        torch.as_tensor(case.observations(batch_size, seed + 1)),
        torch.zeros(batch_size),
        torch.zeros(batch_size),
    )


def make_agents(case: PixelCase) -> dict[str, DQNAgent]:
    """One agent per norm variant, built as training builds it."""
    return {variant: make_agent(case, variant) for variant in NORM_VARIANTS}


def acting_path(agent: DQNAgent) -> str:
    """Which forward ``DQNAgent.act`` takes for a single observation."""
    return "numpy mirror" if agent.numpy_actor is not None else "torch"


def act_latencies(case: PixelCase, agents: dict[str, DQNAgent], budget: Budget) -> dict:
    """One observation to one action through ``DQNAgent.act`` (epsilon 0), per agent."""
    obs = case.observations(1)[0]
    fns = {variant: _acting(agent, obs) for variant, agent in agents.items()}
    return interleaved_median_us(fns, budget.repeats, budget.seconds)


def _acting(agent: DQNAgent, obs: np.ndarray):
    return lambda: agent.act(obs, 0.0)


def update_latencies(case: PixelCase, agents: dict[str, DQNAgent], budget: Budget) -> dict:
    """One ``DQNAgent.update`` on a minibatch of the preset's size, per agent."""
    batch = random_batch(case, next(iter(agents.values())).config.batch_size)
    fns = {variant: _updating(agent, batch) for variant, agent in agents.items()}
    return interleaved_median_us(fns, budget.repeats, budget.seconds)


def _updating(agent: DQNAgent, batch: Batch):
    return lambda: agent.update(batch)


def eval_forward_latencies(
    case: PixelCase, agents: dict[str, DQNAgent], batch_size: int, budget: Budget
) -> dict:
    """Eval-mode forward in acting mode of each online network, and each BatchNorm one folded."""
    nets = {}
    for variant, agent in agents.items():
        nets[variant] = agent.online
        if agent.spec.norm == "batchnorm":
            nets[variant + FOLDED_SUFFIX] = fold_batchnorm(agent.online)
    obs = torch.as_tensor(case.observations(batch_size))
    fns = {name: _forward(net, obs) for name, net in nets.items()}
    return interleaved_median_us(fns, budget.repeats, budget.seconds)


def _forward(net: torch.nn.Module, obs: torch.Tensor):
    def run():
        with acting_mode(net):
            return net(obs)

    return run
