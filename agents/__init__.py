"""agents: the learning side of qnorm: DQN agent, replay, training loop, evaluation, checkpoints."""

from agents.checkpoint import Policy, load_policy, save_checkpoint
from agents.config import DQNConfig, NetworkConfig, RunConfig, TrainConfig
from agents.dqn import DQNAgent
from agents.evaluation import EvalResult, run_episodes
from agents.replay import Batch, ReplayBuffer
from agents.training import TrainResult, train

__all__ = [
    "Batch",
    "DQNAgent",
    "DQNConfig",
    "EvalResult",
    "NetworkConfig",
    "Policy",
    "ReplayBuffer",
    "RunConfig",
    "TrainConfig",
    "TrainResult",
    "load_policy",
    "run_episodes",
    "save_checkpoint",
    "train",
]
