"""qnorm: Q-networks with pluggable normalization and the mode rules that make it correct."""

from qnorm.builders import build_q_network, spec_from_dict
from qnorm.conv_networks import (
    CONV_PRESETS,
    NORM_TARGETS,
    ConvQNetwork,
    ConvQNetworkSpec,
    conv_preset,
)
from qnorm.errors import QnormError
from qnorm.folding import fold_batchnorm
from qnorm.modes import (
    acting_mode,
    batch_statistics_mode,
    check_train_batch_size,
    eval_mode,
    greedy_action,
    has_batch_statistics,
    learning_mode,
    observation_ndim,
    q_values,
)
from qnorm.networks import ACTIVATIONS, PLACEMENTS, QNetwork, QNetworkSpec
from qnorm.norms import (
    FeatureBatchNorm,
    FeatureGroupNorm,
    get_norm_kind,
    is_batch_statistics_module,
    make_norm,
    norm_names,
    register_norm,
)
from qnorm.recalibration import recalibrate_batch_statistics
from qnorm.sync import hard_update, make_target, soft_update

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "CONV_PRESETS",
    "NORM_TARGETS",
    "PLACEMENTS",
    "ConvQNetwork",
    "ConvQNetworkSpec",
    "FeatureBatchNorm",
    "FeatureGroupNorm",
    "QNetwork",
    "QNetworkSpec",
    "QnormError",
    "__version__",
    "acting_mode",
    "batch_statistics_mode",
    "build_q_network",
    "check_train_batch_size",
    "conv_preset",
    "eval_mode",
    "fold_batchnorm",
    "get_norm_kind",
    "greedy_action",
    "hard_update",
    "has_batch_statistics",
    "is_batch_statistics_module",
    "learning_mode",
    "make_norm",
    "make_target",
    "norm_names",
    "observation_ndim",
    "q_values",
    "recalibrate_batch_statistics",
    "register_norm",
    "soft_update",
    "spec_from_dict",
]
