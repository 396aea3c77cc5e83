"""The Q-network spec for a config and an env: an MLP for vectors, a conv network for images."""

from __future__ import annotations

import numpy as np

from agents.config import NetworkConfig, TrainConfig
from qnorm import QnormError
from qnorm.conv_networks import ConvQNetworkSpec, conv_preset
from qnorm.networks import QNetworkSpec

# Where the config leaves the conv torso empty, the preset's sizes apply.
_CONV_OVERRIDES = {
    "channels": "conv_channels",
    "kernels": "conv_kernels",
    "strides": "conv_strides",
    "pools": "conv_pools",
}


def network_spec(
    config: TrainConfig, observation_space, num_actions: int, family_preset: str | None = None
) -> QNetworkSpec | ConvQNetworkSpec:
    """The spec for ``observation_space``: 1-D Box -> MLP, 3-D Box (an image) -> conv network.

    ``family_preset`` is the conv preset of the env's family (``minatar`` for MinAtar,
    ``nature`` for Atari); ``conv_preset auto`` takes it, or ``nature`` without one.
    """
    shape = tuple(observation_space.shape)
    if len(shape) == 1:
        return mlp_spec(config.network, shape[0], num_actions)
    if len(shape) == 3:
        return conv_spec(config.network, observation_space, num_actions, family_preset)
    raise QnormError(
        f"observations of shape {shape} fit neither network: an MLP takes 1-D observations "
        "and a conv network 3-D images"
    )


def mlp_spec(net: NetworkConfig, obs_dim: int, num_actions: int) -> QNetworkSpec:
    """The MLP spec for ``obs_dim``-sized vector observations."""
    return QNetworkSpec(
        obs_dim=obs_dim,
        num_actions=num_actions,
        hidden_sizes=net.hidden_sizes,
        activation=net.activation,
        norm=net.norm,
        placement=net.norm_placement,
        input_norm=net.input_norm,
        dueling=net.dueling,
        norm_groups=net.norm_groups,
        norm_momentum=net.norm_momentum or None,
        norm_options=norm_options(net),
        norm_layers=net.norm_layers,
    )


def norm_options(net: NetworkConfig) -> dict:
    """The norm kind's own options from the config (BatchRenorm's clips and warm-up)."""
    if net.norm != "batchrenorm":
        return {}
    return {"warmup_steps": net.renorm_warmup, "rmax": net.renorm_rmax, "dmax": net.renorm_dmax}


def conv_spec(
    net: NetworkConfig, observation_space, num_actions: int, family_preset: str | None
) -> ConvQNetworkSpec:
    """The conv spec for image observations: the preset's torso, overridden field by field."""
    if net.input_norm:
        raise QnormError("input_norm applies to vector observations, not to images")
    if net.norm_layers != "all":
        raise QnormError(
            "norm_layers applies to MLPs; a conv network chooses its normalized part with "
            "norm_target (torso, head or both)"
        )
    name = net.conv_preset if net.conv_preset != "auto" else (family_preset or "nature")
    torso = {k: v for k, v in conv_preset(name).items() if k in _CONV_OVERRIDES}
    for spec_field, config_field in _CONV_OVERRIDES.items():
        if getattr(net, config_field):
            torso[spec_field] = getattr(net, config_field)
    if net.conv_channels and not net.conv_pools:
        torso["pools"] = (0,) * len(net.conv_channels)
    shape = tuple(int(d) for d in observation_space.shape)
    return ConvQNetworkSpec(
        obs_shape=shape,
        num_actions=num_actions,
        **torso,
        hidden_sizes=net.hidden_sizes,
        activation=net.activation,
        norm=net.norm,
        placement=net.norm_placement,
        norm_after_pool=net.norm_after_pool,
        norm_target=net.norm_target,
        norm_groups=net.norm_groups,
        norm_momentum=net.norm_momentum or None,
        norm_options=norm_options(net),
        channels_last=is_channels_last(shape),
        obs_scale=1.0 / 255.0 if np.dtype(observation_space.dtype) == np.uint8 else 1.0,
        dueling=net.dueling,
    )


def is_channels_last(shape: tuple[int, ...]) -> bool:
    """Whether an image observation is (H, W, C): its last dim is smaller than its first.

    MinAtar's (10, 10, C) grids and RGB frames (H, W, 3) are channels-last; gymnasium's
    frame stacks (k, 84, 84) are channels-first.
    """
    return shape[-1] < shape[0]
