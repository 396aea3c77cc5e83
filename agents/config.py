"""Typed training configuration. The command line and config.json are generated from it."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field

from agents.schedules import LR_SCHEDULES
from qnorm import QnormError, norm_names
from qnorm.conv_networks import CONV_PRESETS
from qnorm.networks import ACTIVATIONS, NORM_LAYERS, PLACEMENTS

CONV_PRESET_NAMES = tuple(CONV_PRESETS)


def _opt(help: str, **extra) -> dict:
    """Field metadata: the flag's help text and any argparse extras (choices, ...)."""
    return {"help": help, **extra}


@dataclass
class NetworkConfig:
    """The Q-network: widths, activation, and which normalization goes where."""

    hidden_sizes: tuple[int, ...] = field(
        default=(256, 256), metadata=_opt("widths of the hidden layers")
    )
    activation: str = field(default="relu", metadata=_opt("activation", choices=ACTIVATIONS))
    norm: str = field(default="none", metadata=_opt("normalization kind", choices=norm_names))
    norm_placement: str = field(
        default="before", metadata=_opt("norm before or after the activation", choices=PLACEMENTS)
    )
    input_norm: bool = field(default=False, metadata=_opt("also normalize the raw observation"))
    dueling: bool = field(default=False, metadata=_opt("dueling head: Q = V + A - mean(A)"))
    norm_groups: int = field(default=8, metadata=_opt("group count of the groupnorm kind"))
    norm_momentum: float = field(
        default=0.0,
        metadata=_opt(
            "running-statistics momentum of batchnorm and batchrenorm (0: theirs, 0.1 and 0.01)"
        ),
    )
    norm_layers: str = field(
        default="all",
        metadata=_opt("which hidden layers of an MLP get the norm", choices=NORM_LAYERS),
    )
    # Batch Renormalization (norm batchrenorm): CrossQ's reference uses 100k warm-up passes.
    renorm_warmup: int = field(
        default=5_000, metadata=_opt("batchrenorm: train-mode passes of plain BatchNorm first")
    )
    renorm_rmax: float = field(default=3.0, metadata=_opt("batchrenorm: clip of r (>= 1)"))
    renorm_dmax: float = field(default=5.0, metadata=_opt("batchrenorm: clip of d (>= 0)"))
    # Image observations only: the conv torso in front of the hidden layers above.
    conv_preset: str = field(
        default="auto",
        metadata=_opt(
            "conv torso for image observations (auto: the env family's, else nature)",
            choices=("auto", *CONV_PRESET_NAMES),
        ),
    )
    conv_channels: tuple[int, ...] = field(
        default=(), metadata=_opt("output channels of each conv (empty: the preset's)")
    )
    conv_kernels: tuple[int, ...] = field(
        default=(), metadata=_opt("kernel size of each conv (empty: the preset's)")
    )
    conv_strides: tuple[int, ...] = field(
        default=(), metadata=_opt("stride of each conv (empty: the preset's)")
    )
    conv_pools: tuple[int, ...] = field(
        default=(), metadata=_opt("max-pool size after each conv, 0 for none (empty: the preset's)")
    )
    norm_after_pool: bool = field(
        default=False, metadata=_opt("in the conv torso, normalize after max-pooling, not before")
    )
    norm_target: str = field(
        default="both",
        metadata=_opt(
            "which part of a conv network is normalized", choices=("torso", "head", "both")
        ),
    )


@dataclass
class DQNConfig:
    """DQN hyperparameters, named and counted as in Stable-Baselines3's DQN."""

    learning_rate: float = field(default=1e-4, metadata=_opt("learning rate of the optimizer"))
    buffer_size: int = field(default=1_000_000, metadata=_opt("replay capacity (transitions)"))
    learning_starts: int = field(
        default=100, metadata=_opt("env steps of uniform random actions before learning")
    )
    batch_size: int = field(default=32, metadata=_opt("minibatch size"))
    tau: float = field(default=1.0, metadata=_opt("target update coefficient (1 = hard copy)"))
    gamma: float = field(default=0.99, metadata=_opt("discount factor"))
    n_step: int = field(
        default=1,
        metadata=_opt(
            "rewards summed per TD target before bootstrapping from the n-th next state "
            "(fewer where the episode ends first)"
        ),
    )
    train_freq: int = field(default=4, metadata=_opt("update every N steps of the vector env"))
    gradient_steps: int = field(
        default=1, metadata=_opt("gradient steps per update (-1: as many as env steps collected)")
    )
    target_update_interval: int = field(
        default=10_000, metadata=_opt("env steps between target network updates")
    )
    exploration_fraction: float = field(
        default=0.1, metadata=_opt("fraction of training over which epsilon decays")
    )
    lr_schedule: str = field(
        default="constant",
        metadata=_opt(
            "learning rate over training: constant, or linear from learning_rate down to 0 at "
            "the last step (SB3's lin_ schedules)",
            choices=LR_SCHEDULES,
        ),
    )
    exploration_initial_eps: float = field(default=1.0, metadata=_opt("initial epsilon"))
    exploration_final_eps: float = field(default=0.05, metadata=_opt("final epsilon"))
    max_grad_norm: float = field(
        default=10.0, metadata=_opt("gradient-norm clipping (0: no clipping)")
    )
    double_dqn: bool = field(default=True, metadata=_opt("Double DQN targets"))
    loss: str = field(default="huber", metadata=_opt("TD loss", choices=("huber", "mse")))
    optimizer: str = field(
        default="adam",
        metadata=_opt(
            "adam, or rmsprop: centered RMSprop with alpha 0.95, momentum 0.95, eps 0.01 "
            "(the MinAtar reference DQN's)",
            choices=("adam", "rmsprop"),
        ),
    )
    adam_beta1: float = field(
        default=0.9, metadata=_opt("Adam's first-moment decay (CrossQ uses 0.5 with BatchNorm)")
    )
    weight_decay: float = field(default=0.0, metadata=_opt("Adam's L2 weight decay (0: none)"))
    bn_mode: str = field(
        default="standard",
        metadata=_opt(
            "standard: target network; joint: one train-mode forward of cat(s, s'), "
            "no target network (CrossQ)",
            choices=("standard", "joint"),
        ),
    )
    joint_target: bool = field(
        default=False,
        metadata=_opt(
            "joint mode: bootstrap from a lagged copy (synced by target_update_interval and "
            "tau) that normalizes cat(s, s') with the same batch statistics, instead of from "
            "the online network itself"
        ),
    )


@dataclass
class RunConfig:
    """What to train on, for how long, where to write, and how often to log and save."""

    env_id: str = field(default="CartPole-v1", metadata=_opt("gymnasium environment id"))
    total_timesteps: int = field(default=100_000, metadata=_opt("environment steps to train"))
    seed: int = field(default=0, metadata=_opt("random seed"))
    num_envs: int = field(default=1, metadata=_opt("parallel environments (vector env)"))
    run_dir: str = field(
        default="", metadata=_opt("run directory (default: runs/<env>__<norm>__<seed>__<time>)")
    )
    eval_freq: int = field(default=10_000, metadata=_opt("env steps between evaluations (0: off)"))
    eval_episodes: int = field(default=10, metadata=_opt("episodes per greedy evaluation"))
    checkpoint_freq: int = field(
        default=0, metadata=_opt("env steps between checkpoints (0: final only)")
    )
    state_freq: int = field(
        default=50_000,
        metadata=_opt(
            "env steps between training-state snapshots for --resume, each at the next episode "
            "boundary, and one at the end (0: none)"
        ),
    )
    log_freq: int = field(default=100, metadata=_opt("gradient steps between loss logs"))
    diagnostics_freq: int = field(
        default=1000, metadata=_opt("gradient steps between norm diagnostics (0: off)")
    )
    device: str = field(
        default="auto", metadata=_opt("torch device", choices=("auto", "cpu", "cuda"))
    )
    torch_threads: int = field(
        default=1, metadata=_opt("torch CPU threads (1 is fastest for small networks)")
    )
    flush_denormal: bool = field(
        default=True,
        metadata=_opt(
            "on CPU, compute subnormal floats as zero (torch.set_flush_denormal): weights "
            "decaying towards zero otherwise slow every matmul down ~100x"
        ),
    )
    progress: bool = field(default=True, metadata=_opt("progress bar (only on a terminal)"))
    stop_when_solved: bool = field(
        default=False,
        metadata=_opt("stop after a greedy evaluation reaches the env's reward threshold"),
    )
    tuned_preset: bool = field(
        default=True,
        metadata=_opt(
            "take the settings tuned for this env and norm variant, where qnorm has them "
            "(agents/tuned_presets.json); explicit flags still win"
        ),
    )
    tuned_preset_from: str = field(
        default="",
        metadata=_opt(
            "take the settings tuned for this study variant (e.g. layernorm) instead of the "
            "run's own norm's, to tell a norm's gain from its settings' (default: its own)"
        ),
    )


@dataclass
class TrainConfig:
    """One training run: the run, the network and the DQN hyperparameters."""

    run: RunConfig = field(default_factory=RunConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    dqn: DQNConfig = field(default_factory=DQNConfig)

    def to_dict(self) -> dict:
        """A JSON-ready dict; ``from_dict`` turns it back into an equal config."""
        return to_jsonable(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """The config stored by ``to_dict``; unknown or ill-typed fields are an error."""
        return from_jsonable(cls, data)


SECTIONS = {"run": RunConfig, "network": NetworkConfig, "dqn": DQNConfig}


def to_jsonable(obj):
    """Dataclasses to dicts and tuples to lists, recursively."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [to_jsonable(v) for v in obj]
    return obj


def from_jsonable(cls, data: dict):
    """Rebuild dataclass ``cls`` from ``to_jsonable`` output, checking names and types."""
    if not isinstance(data, dict):
        raise QnormError(f"expected a JSON object for {cls.__name__}, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise QnormError(f"{cls.__name__} has no field(s) {', '.join(unknown)}")
    return cls(**{name: coerce(hints[name], value, name) for name, value in data.items()})


def coerce(hint, value, name: str):
    """``value`` as the type ``hint`` asks for (lists become tuples); a clear error if it is not."""
    if dataclasses.is_dataclass(hint):
        return from_jsonable(hint, value)
    origin = typing.get_origin(hint)
    if origin is tuple:
        item = typing.get_args(hint)[0]
        if not isinstance(value, (list, tuple)):
            raise QnormError(f"{name} must be a list, got {value!r}")
        return tuple(coerce(item, v, name) for v in value)
    if origin in (typing.Union, types.UnionType):
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and not (
        isinstance(value, hint) and not (hint is int and isinstance(value, bool))
    ):
        raise QnormError(f"{name} must be of type {hint.__name__}, got {value!r}")
    return value


def validate(config: TrainConfig) -> None:
    """Raise QnormError for any setting that cannot train, before anything runs."""
    _check_counts(config.run, config.dqn)
    _check_rates(config.dqn)
    _check_network(config.network)
    run, dqn = config.run, config.dqn
    if dqn.joint_target and dqn.bn_mode != "joint":
        raise QnormError("joint_target needs bn_mode joint (the standard mode has its target)")
    if run.stop_when_solved and not run.eval_freq:
        raise QnormError("stop_when_solved needs evaluations: set eval_freq above 0")


def _check_counts(run: RunConfig, dqn: DQNConfig) -> None:
    """Step counts, sizes and frequencies."""
    positive = {
        "total_timesteps": run.total_timesteps,
        "num_envs": run.num_envs,
        "eval_episodes": run.eval_episodes,
        "torch_threads": run.torch_threads,
        "log_freq": run.log_freq,
        "buffer_size": dqn.buffer_size,
        "batch_size": dqn.batch_size,
        "train_freq": dqn.train_freq,
        "target_update_interval": dqn.target_update_interval,
        "n_step": dqn.n_step,
    }
    for name, value in positive.items():
        if value <= 0:
            raise QnormError(f"{name} must be positive, got {value}")
    non_negative = {
        "learning_starts": dqn.learning_starts,
        "eval_freq": run.eval_freq,
        "checkpoint_freq": run.checkpoint_freq,
        "state_freq": run.state_freq,
        "diagnostics_freq": run.diagnostics_freq,
    }
    for name, value in non_negative.items():
        if value < 0:
            raise QnormError(f"{name} must be zero or positive, got {value}")
    if dqn.gradient_steps == 0 or dqn.gradient_steps < -1:
        raise QnormError(f"gradient_steps must be positive or -1, got {dqn.gradient_steps}")
    if dqn.buffer_size < dqn.batch_size:
        raise QnormError(
            f"buffer_size {dqn.buffer_size} is smaller than batch_size {dqn.batch_size}"
        )


def _check_rates(dqn: DQNConfig) -> None:
    """Discount, exploration, step sizes and the optimizer's settings."""
    unit_interval = {
        "gamma": dqn.gamma,
        "exploration_initial_eps": dqn.exploration_initial_eps,
        "exploration_final_eps": dqn.exploration_final_eps,
    }
    for name, value in unit_interval.items():
        if not 0.0 <= value <= 1.0:
            raise QnormError(f"{name} must be between 0 and 1, got {value}")
    if not 0.0 < dqn.tau <= 1.0:
        raise QnormError(f"tau must be in (0, 1], got {dqn.tau}")
    if not 0.0 < dqn.exploration_fraction <= 1.0:
        raise QnormError(f"exploration_fraction must be in (0, 1], got {dqn.exploration_fraction}")
    if dqn.learning_rate <= 0:
        raise QnormError(f"learning_rate must be positive, got {dqn.learning_rate}")
    if not 0.0 <= dqn.adam_beta1 < 1.0:
        raise QnormError(f"adam_beta1 must be in [0, 1), got {dqn.adam_beta1}")
    if dqn.weight_decay < 0:
        raise QnormError(f"weight_decay must be zero or positive, got {dqn.weight_decay}")
    if not dqn.max_grad_norm >= 0:
        raise QnormError(
            f"max_grad_norm must be positive, or 0 for no clipping, got {dqn.max_grad_norm}"
        )


def _check_network(net: NetworkConfig) -> None:
    """Widths and the norms' settings."""
    if not 0.0 <= net.norm_momentum <= 1.0:
        raise QnormError(
            f"norm_momentum must be in (0, 1], or 0 for the norm's own, got {net.norm_momentum}"
        )
    if net.renorm_rmax < 1.0 or net.renorm_dmax < 0 or net.renorm_warmup < 0:
        raise QnormError(
            "batchrenorm needs renorm_rmax >= 1, renorm_dmax >= 0 and renorm_warmup >= 0, got "
            f"{net.renorm_rmax}, {net.renorm_dmax} and {net.renorm_warmup}"
        )
    if not net.hidden_sizes or min(net.hidden_sizes) < 1:
        raise QnormError("hidden_sizes needs at least one positive width")
    if net.norm_groups < 1:
        raise QnormError(f"norm_groups must be positive, got {net.norm_groups}")
