"""The study grid: environments x normalization variants x seeds, as data."""

from __future__ import annotations

from dataclasses import dataclass

from agents.cli import config_from_flags
from agents.config import TrainConfig
from agents.envs import env_spec
from agents.run_dir import path_safe
from qnorm import QnormError

# Each variant is a set of TrainConfig overrides; everything else comes from the env preset,
# the same for every variant.
VARIANTS: dict[str, dict[str, object]] = {
    "none": {"network.norm": "none"},
    "batchnorm": {"network.norm": "batchnorm", "network.norm_placement": "before"},
    "batchnorm_after": {"network.norm": "batchnorm", "network.norm_placement": "after"},
    "batchnorm_input": {"network.norm": "batchnorm", "network.input_norm": True},
    # Conv networks: BatchNorm in the feature extractor only, the fully connected head plain.
    "batchnorm_torso": {"network.norm": "batchnorm", "network.norm_target": "torso"},
    # A pooled MinAtar torso (its one conv, then 2x2 max-pooling): without a norm (pooling's
    # own effect), and BatchNorm before or after the pooling. Image envs with one conv only.
    "none_pooled": {"network.norm": "none", "network.conv_pools": (2,)},
    "batchnorm_pool_before": {"network.norm": "batchnorm", "network.conv_pools": (2,)},
    "batchnorm_pool_after": {
        "network.norm": "batchnorm",
        "network.conv_pools": (2,),
        "network.norm_after_pool": True,
    },
    "layernorm": {"network.norm": "layernorm", "network.norm_placement": "before"},
    "layernorm_after": {"network.norm": "layernorm", "network.norm_placement": "after"},
    "layernorm_input": {"network.norm": "layernorm", "network.input_norm": True},
    "rmsnorm": {"network.norm": "rmsnorm"},
    "groupnorm": {"network.norm": "groupnorm"},
    "batchnorm_joint": {"network.norm": "batchnorm", "dqn.bn_mode": "joint"},
    "batchrenorm_joint": {"network.norm": "batchrenorm", "dqn.bn_mode": "joint"},
}


@dataclass(frozen=True)
class Scaled:
    """A setting as a multiple of the value the config holds without it: the env preset's, or
    the tuned preset's where the protocol trains on tuned presets (every env's own scale)."""

    factor: float


# The diagnosis arms (scripts/study.py --protocol diagnosis): BatchNorm with one setting
# changed each, every arm a test of one explanation of why BatchNorm agents lose their policy.
BN = VARIANTS["batchnorm"]
DIAGNOSIS_ARMS: dict[str, dict[str, object]] = {
    # effective learning rate: BatchNorm makes the weights before it scale invariant
    "bn_lr_quarter": {**BN, "dqn.learning_rate": Scaled(0.25)},
    "bn_lr_decay": {**BN, "dqn.lr_schedule": "linear"},  # the step size falls to 0 at the end
    "bn_weight_decay": {**BN, "dqn.weight_decay": 1e-3},
    "bn_beta1_half": {**BN, "dqn.adam_beta1": 0.5},  # CrossQ's Adam
    # the target and the statistics behind it
    "bn_target_x10": {**BN, "dqn.target_update_interval": Scaled(10)},
    "bn_momentum_low": {**BN, "network.norm_momentum": 0.01},
    "bn_batch_x4": {**BN, "dqn.batch_size": Scaled(4)},
    "bn_single_dqn": {**BN, "dqn.double_dqn": False},  # the zoo tuned for SB3's plain max
    # where the norm sits: the first hidden layer only, not the one before the Q head
    "bn_first_layer": {**BN, "network.norm_layers": "first"},
    # Batch Renormalization with CrossQ's reference warm-up (100k passes) and momentum 0.01
    "brn_joint_crossq": {**VARIANTS["batchrenorm_joint"], "network.renorm_warmup": 100_000},
}
VARIANTS.update(DIAGNOSIS_ARMS)

# The holding arms (scripts/study.py --protocol holding): BatchNorm at its own tuned preset
# with one more change each, the ones the diagnosis and the tuning point to: the batch
# statistics' noise (a 4x larger batch than the space's largest), a slowly moving target
# (Polyak averaging every step), the action gap carried by its own stream (a dueling head),
# a smaller step size, and 3- or 5-step returns (the slow part of the task, keeping the
# cart centred, reaches the targets with fewer bootstraps). The committed results/holding ran
# on the preset as tuned; 5-step returns then became part of it (tuned_presets.json
# "amended"), so a rerun from scratch would stack each arm on top of n_step 5.
HOLDING_ARMS: dict[str, dict[str, object]] = {
    "bnt_batch_1024": {**BN, "dqn.batch_size": 1024},
    "bnt_soft_target": {**BN, "dqn.tau": 0.005, "dqn.target_update_interval": 1},
    "bnt_dueling": {**BN, "network.dueling": True},
    "bnt_lr_half": {**BN, "dqn.learning_rate": Scaled(0.5)},
    "bnt_n_step": {**BN, "dqn.n_step": 3},
    "bnt_n_step_5": {**BN, "dqn.n_step": 5},
}
# Joint Batch Renormalization at its own tuned preset, with one change each: 3- or 5-step
# returns, and a lagged copy bootstrapping the joint update (dqn.joint_target) instead of
# the network being trained. The committed results/holding ran on its preset as tuned.
BRN_JOINT = VARIANTS["batchrenorm_joint"]
HOLDING_ARMS.update(
    {
        "brnt_n_step": {**BRN_JOINT, "dqn.n_step": 3},
        "brnt_n_step_5": {**BRN_JOINT, "dqn.n_step": 5},
        "brnt_lagged": {**BRN_JOINT, "dqn.joint_target": True},
    }
)
# The same change on no norm's tuned preset, so a gain can be told apart from one any
# network would have.
HOLDING_CONTROLS: dict[str, dict[str, object]] = {
    "none_n_step": {**VARIANTS["none"], "dqn.n_step": 3},
}
VARIANTS.update(HOLDING_ARMS)
VARIANTS.update(HOLDING_CONTROLS)

# Is it the norm or its settings? A network run at another variant's tuned preset
# (run.tuned_preset_from): no norm and BatchNorm at the settings tuned for LayerNorm.
CROSS_PRESET_CONTROLS: dict[str, dict[str, object]] = {
    "none_at_layernorm": {**VARIANTS["none"], "run.tuned_preset_from": "layernorm"},
    "batchnorm_at_layernorm": {**BN, "run.tuned_preset_from": "layernorm"},
}
VARIANTS.update(CROSS_PRESET_CONTROLS)

# Which BatchNorm preset ships on CartPole-v1 (scripts/study.py --protocol preset_choice):
# the current one (its retuning with n-step returns in the space) against its first tuning
# with the 5-step amendment, spelled out in full here so no setting of the current preset
# leaks into it. A CartPole-v1 arm: the values are that env's.
BN_FIRST_TUNING_CARTPOLE: dict[str, object] = {
    "dqn.adam_beta1": 0.9,
    "dqn.batch_size": 128,
    "dqn.exploration_final_eps": 0.035336097679694325,
    "dqn.exploration_fraction": 0.34902850494129645,
    "dqn.gradient_steps": -1,
    "dqn.learning_rate": 0.001394078599356713,
    "dqn.lr_schedule": "linear",
    "dqn.n_step": 5,
    "dqn.target_update_interval": 100,
    "dqn.train_freq": 4,
    "network.hidden_sizes": (128, 128),
    "network.norm_momentum": 0.03,
}
PRESET_CHOICE_ARMS: dict[str, dict[str, object]] = {
    "bn_first_tuning_n5": {**BN, **BN_FIRST_TUNING_CARTPOLE},
}
VARIANTS.update(PRESET_CHOICE_ARMS)

# Colours are fixed per variant so every figure reads the same way.
COLOURS: dict[str, str] = {
    "none": "#444444",
    "batchnorm": "#1f77b4",
    "batchnorm_after": "#6baed6",
    "batchnorm_input": "#08306b",
    "batchnorm_torso": "#17becf",
    "batchnorm_pool_before": "#393b79",
    "batchnorm_pool_after": "#9c9ede",
    "none_pooled": "#bdbdbd",
    "groupnorm": "#98df8a",
    "layernorm": "#d62728",
    "layernorm_after": "#fc9272",
    "layernorm_input": "#67000d",
    "rmsnorm": "#2ca02c",
    "batchnorm_joint": "#9467bd",
    "batchrenorm_joint": "#ff7f0e",
    "bn_lr_quarter": "#e377c2",
    "bn_lr_decay": "#17becf",
    "bn_weight_decay": "#8c564b",
    "bn_beta1_half": "#bcbd22",
    "bn_target_x10": "#e377c2",
    "bn_momentum_low": "#8c564b",
    "bn_batch_x4": "#bcbd22",
    "bn_single_dqn": "#17becf",
    "bn_first_layer": "#e377c2",
    "brn_joint_crossq": "#8c564b",
    "bnt_batch_1024": "#bcbd22",
    "bnt_soft_target": "#e377c2",
    "bnt_dueling": "#17becf",
    "bnt_lr_half": "#8c564b",
    "bnt_n_step": "#2ca02c",
    "bnt_n_step_5": "#98df8a",
    "none_n_step": "#7f7f7f",
    "brnt_n_step": "#c5b0d5",
    "brnt_n_step_5": "#9467bd",
    "brnt_lagged": "#ff9896",
    "none_at_layernorm": "#7f7f7f",
    "batchnorm_at_layernorm": "#9edae5",
    "bn_first_tuning_n5": "#aec7e8",
}

# Published levels drawn beside the study's curves: (env steps, mean return, +- spread, source).
REFERENCE_POINTS: dict[str, tuple[int, float, float, str]] = {
    # A reproduction of MinAtar's reference DQN (examples/dqn.py, the preset's settings).
    "MinAtar/Breakout-v1": (500_000, 6.0, 2.0, "MinAtar reference DQN"),
}

# Figures draw one panel per family (no norm in each, as the reference); a variant of no
# family gets a panel of its own kind.
FAMILIES: dict[str, tuple[str, ...]] = {
    "BatchNorm": (
        "batchnorm",
        "batchnorm_after",
        "batchnorm_input",
        "batchnorm_torso",
        "batchnorm_pool_before",
        "batchnorm_pool_after",
        "none_pooled",  # the pooled network's own control
        "batchnorm_joint",
        "batchrenorm_joint",
    ),
    "LayerNorm, RMSNorm, GroupNorm": (
        "layernorm",
        "layernorm_after",
        "layernorm_input",
        "rmsnorm",
        "groupnorm",
    ),
    # The diagnosis arms, by the explanation they test (BatchNorm drawn in each as well).
    "effective learning rate": (
        "batchnorm",
        "bn_lr_quarter",
        "bn_lr_decay",
        "bn_weight_decay",
        "bn_beta1_half",
    ),
    "target and statistics": (
        "batchnorm",
        "bn_target_x10",
        "bn_momentum_low",
        "bn_batch_x4",
        "bn_single_dqn",
    ),
    "placement and joint updates": (
        "batchnorm",
        "bn_first_layer",
        "batchnorm_joint",
        "batchrenorm_joint",
        "brn_joint_crossq",
    ),
    "BatchNorm at its tuned settings": (
        "batchnorm",
        *(a for a in HOLDING_ARMS if a.startswith("bnt_")),
    ),
    "n-step returns": ("batchnorm", "bnt_n_step", "bnt_n_step_5", "none_n_step"),
    "joint Batch Renormalization at its tuned settings": (
        "batchrenorm_joint",
        "brnt_n_step",
        "brnt_n_step_5",
        "brnt_lagged",
    ),
    "at LayerNorm's tuned settings": ("layernorm", "none_at_layernorm", "batchnorm_at_layernorm"),
}

# Scores across envs are normalized as (return - random) / (target - random): random is a
# uniform random policy's mean return over 100 episodes (seeds 0-99, measured with the
# evaluation env), target the env's registered threshold. Envs without one are left out of
# the across-env aggregate.
SCORE_RANGES: dict[str, tuple[float, float]] = {
    "CartPole-v1": (23.68, 475.0),
    "Acrobot-v1": (-497.08, -100.0),
    "MountainCar-v0": (-200.0, -110.0),
    "LunarLander-v3": (-191.96, 200.0),
}

ENVS = ("CartPole-v1", "Acrobot-v1", "MountainCar-v0", "LunarLander-v3")
# Variants that need a conv torso (the pooled ones: a one-conv torso, as MinAtar's).
IMAGE_VARIANTS = (
    "batchnorm_torso",
    "none_pooled",
    "batchnorm_pool_before",
    "batchnorm_pool_after",
)
# The vector study's variants: the first study's ten, named (a variant added for another
# protocol stays out of it without a new exclusion).
DEFAULT_VARIANTS = (
    "none",
    "batchnorm",
    "batchnorm_after",
    "batchnorm_input",
    "layernorm",
    "layernorm_after",
    "layernorm_input",
    "rmsnorm",
    "batchnorm_joint",
    "batchrenorm_joint",
)


@dataclass(frozen=True)
class Cell:
    """One training run of the study."""

    env_id: str
    variant: str
    seed: int

    @property
    def name(self) -> str:
        """The cell's run-directory name."""
        return f"{path_safe(self.env_id)}__{self.variant}__{self.seed}"


def reward_threshold(env_id: str) -> float | None:
    """The env's registered 'solved' return, if it has one."""
    return env_spec(env_id).reward_threshold  # registers optional families' ids on first use


# The settings that tell variants apart, and their values when a variant does not set them.
NORM_DEFAULTS: dict[str, object] = {
    "network.norm": "none",
    "network.norm_placement": "before",
    "network.input_norm": False,
    "network.norm_target": "both",
    "network.norm_layers": "all",
    "dqn.bn_mode": "standard",
}


def variant_of(settings: dict[str, object]) -> str | None:
    """The study variant whose norm settings ``settings`` (``section.field`` keys) match."""
    given = {key: settings.get(key, default) for key, default in NORM_DEFAULTS.items()}
    for name, variant in VARIANTS.items():
        if given == {**NORM_DEFAULTS, **variant}:
            return name
    return None


def cells(envs: list[str], variants: list[str], seeds: list[int]) -> list[Cell]:
    """Every combination, in a stable order; unknown variants are an error."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise QnormError(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    return [Cell(e, v, s) for e in envs for v in variants for s in seeds]


def seed_by_seed(grid: list[Cell]) -> list[Cell]:
    """The cells in the order a study runs them: every env and variant on one seed before
    the next seed, so a long study stopped partway still compares every variant."""
    return sorted(grid, key=lambda c: c.seed)  # stable: envs and variants keep their order


def cell_config(cell: Cell, run_dir: str, overrides: dict[str, object]) -> TrainConfig:
    """The ordinary training config of a cell: preset, variant, then study-wide overrides.

    A variant's Scaled setting multiplies what the config holds without it: the preset's
    value, or a study-wide override of it.
    """
    variant = VARIANTS[cell.variant]
    scaled = {key: value for key, value in variant.items() if isinstance(value, Scaled)}
    flags = {
        "run.env_id": cell.env_id,
        "run.seed": cell.seed,
        "run.run_dir": run_dir,
        "run.progress": False,
        "run.torch_threads": 1,  # one thread per process: several run side by side
        "run.tuned_preset": False,  # the env's preset for every variant, unless a protocol asks
        **{key: value for key, value in variant.items() if key not in scaled},
        **overrides,
    }
    if scaled:
        plain = config_from_flags(flags)
        for key, value in scaled.items():
            section, name = key.split(".")
            current = getattr(getattr(plain, section), name)
            flags[key] = type(current)(current * value.factor)
    return config_from_flags(flags)
