"""Conv Q-networks for image observations, built from a typed spec like the MLP's.

A torso of conv, norm, activation and max-pool layers, a flatten, then the same fully
connected head as QNetwork's, all in one flat ``layers`` Sequential (plus a dueling head
beside it), so folding, diagnostics and target sync treat both networks alike.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from torch import nn

from qnorm.errors import QnormError
from qnorm.networks import (
    ACTIVATIONS,
    add_q_head,
    check_common_fields,
    check_norm_widths,
    mlp_layers,
    spec_from_fields,
    spec_to_dict,
)
from qnorm.norms import check_map_form, get_norm_kind, make_norm

NORM_TARGETS = ("torso", "head", "both")

CONV_PRESETS: dict[str, dict] = {
    # Mnih et al. 2015 (Nature DQN), for stacks of 84x84 frames.
    "nature": {
        "channels": (32, 64, 64),
        "kernels": (8, 4, 3),
        "strides": (4, 2, 1),
        "pools": (0, 0, 0),
        "hidden_sizes": (512,),
    },
    # Young & Tian 2019 (MinAtar), for 10x10 grids.
    "minatar": {
        "channels": (16,),
        "kernels": (3,),
        "strides": (1,),
        "pools": (0,),
        "hidden_sizes": (128,),
    },
}


def conv_preset(name: str) -> dict:
    """The torso and head sizes of the preset ``name``, as ConvQNetworkSpec keyword arguments."""
    try:
        return dict(CONV_PRESETS[name])
    except KeyError:
        known = ", ".join(CONV_PRESETS)
        raise QnormError(f"unknown conv preset {name!r}; known presets are: {known}") from None


@dataclass(frozen=True)
class ConvQNetworkSpec:
    """Everything needed to rebuild a conv Q-network: input format, torso, head and norm."""

    obs_shape: tuple[int, ...]  # the env's observation shape: (C, H, W), or (H, W, C)
    num_actions: int
    channels: tuple[int, ...] = (32, 64, 64)
    kernels: tuple[int, ...] = (8, 4, 3)
    strides: tuple[int, ...] = (4, 2, 1)
    pools: tuple[int, ...] = (0, 0, 0)  # max-pool size after each conv; 0 = none
    hidden_sizes: tuple[int, ...] = (512,)  # the fully connected head
    activation: str = "relu"
    norm: str = "none"
    placement: str = "before"  # norm before or after the activation
    norm_after_pool: bool = False  # in the torso, normalize after max-pooling
    norm_target: str = "both"  # which part is normalized: torso, head or both
    norm_groups: int = 8  # group count of kinds that take one (groupnorm)
    norm_momentum: float | None = None  # batch-statistics kinds' momentum; None: their default
    norm_options: dict = field(default_factory=dict)  # more options of the kind (RENORM_OPTIONS)
    channels_last: bool = False  # observations are (H, W, C), as MinAtar's
    obs_scale: float = 1.0  # multiplies the float32 observation (1/255 for uint8 frames)
    dueling: bool = False

    kind = "conv"  # a class constant, not a field: names the spec type in ``to_dict``

    def __post_init__(self) -> None:
        for name in ("obs_shape", "channels", "kernels", "strides", "pools", "hidden_sizes"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        object.__setattr__(self, "obs_scale", float(self.obs_scale))
        check_common_fields(self)
        if self.norm_target not in NORM_TARGETS:
            raise QnormError(
                f"norm_target must be one of {', '.join(NORM_TARGETS)}, not {self.norm_target!r}"
            )
        if len(self.obs_shape) != 3 or min(self.obs_shape) < 1:
            raise QnormError(
                f"a conv network takes observations of 3 positive sizes, not {self.obs_shape}"
            )
        if self.num_actions < 1 or any(h < 1 for h in self.hidden_sizes):
            raise QnormError("number of actions and hidden sizes must be >= 1")
        self._check_torso()
        if self.normalizes("torso"):
            check_map_form(self.norm)
        widths = [
            *(self.channels if self.normalizes("torso") else ()),
            *(self.hidden_sizes if self.normalizes("head") else ()),
        ]
        check_norm_widths(self.norm, self.norm_groups, widths)

    def _check_torso(self) -> None:
        layers = len(self.channels)
        if layers < 1 or any(len(v) != layers for v in (self.kernels, self.strides, self.pools)):
            raise QnormError(
                "channels, kernels, strides and pools need one entry per conv layer, "
                "and there must be at least one"
            )
        if min(self.channels + self.kernels + self.strides) < 1 or min(self.pools) < 0:
            raise QnormError("channels, kernels and strides must be >= 1 and pools >= 0")
        if not (math.isfinite(self.obs_scale) and self.obs_scale > 0):
            raise QnormError(f"obs_scale must be a positive number, not {self.obs_scale}")
        self.torso_output_shape()

    @property
    def in_channels(self) -> int:
        """The number of channels of one observation."""
        return self.obs_shape[-1] if self.channels_last else self.obs_shape[0]

    def normalizes(self, part: str) -> bool:
        """Whether the norm kind goes into ``part``: "torso" or "head"."""
        return self.norm != "none" and self.norm_target in (part, "both")

    def torso_output_shape(self) -> tuple[int, int, int]:
        """The (C, H, W) shape of the torso's last feature map (valid convs, floor pools)."""
        height, width = self.obs_shape[:2] if self.channels_last else self.obs_shape[1:]
        h, w = height, width
        layers = zip(self.kernels, self.strides, self.pools, strict=True)
        for i, (kernel, stride, pool) in enumerate(layers, start=1):
            h, w = (h - kernel) // stride + 1, (w - kernel) // stride + 1
            if pool and h >= 1 and w >= 1:
                h, w = h // pool, w // pool
            if h < 1 or w < 1:
                raise QnormError(
                    f"an observation of {height}x{width} pixels shrinks to nothing at conv layer "
                    f"{i}; use smaller kernels, strides or pools"
                )
        return self.channels[-1], h, w

    def to_dict(self) -> dict:
        """A JSON-ready dict that ``from_dict`` turns back into an equal spec."""
        return spec_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ConvQNetworkSpec:
        """The spec stored by ``to_dict``; unknown keys or another kind are an error."""
        return spec_from_fields(cls, data)


# The order of one torso block, by (placement, norm_after_pool).
_BLOCK_ORDERS = {
    ("before", False): ("conv", "norm", "act", "pool"),
    ("before", True): ("conv", "pool", "norm", "act"),
    ("after", False): ("conv", "act", "norm", "pool"),
    ("after", True): ("conv", "act", "pool", "norm"),
}
_BLOCK_NAMES = {"conv": "conv", "norm": "conv_norm", "act": "conv_act", "pool": "pool"}


def _torso_layers(spec: ConvQNetworkSpec) -> OrderedDict[str, nn.Module]:
    """Conv, norm, activation and max-pool layers, then a flatten."""
    norm = spec.norm if spec.normalizes("torso") else "none"
    batch_stats = get_norm_kind(norm).uses_batch_statistics
    order = _BLOCK_ORDERS[(spec.placement, spec.norm_after_pool)]
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    in_channels = spec.in_channels
    blocks = zip(spec.channels, spec.kernels, spec.strides, spec.pools, strict=True)
    for i, (channels, kernel, stride, pool) in enumerate(blocks, start=1):
        norm_layer = make_norm(
            norm,
            channels,
            feature_maps=True,
            groups=spec.norm_groups,
            momentum=spec.norm_momentum,
            options=spec.norm_options,
        )
        # A batch-statistics norm before the activation subtracts each channel's mean, so the
        # conv's bias is dead; a max-pool in between commutes with that per-channel shift.
        bias = not (norm_layer is not None and batch_stats and spec.placement == "before")
        parts = {
            "conv": nn.Conv2d(in_channels, channels, kernel, stride, bias=bias),
            "norm": norm_layer,
            "act": ACTIVATIONS[spec.activation](),
            "pool": nn.MaxPool2d(pool) if pool else None,
        }
        for part in order:
            if parts[part] is not None:
                layers[f"{_BLOCK_NAMES[part]}{i}"] = parts[part]
        in_channels = channels
    layers["flatten"] = nn.Flatten()
    return layers


class ConvQNetwork(nn.Module):
    """A conv network mapping images ``[..., *obs_shape]`` to Q-values ``[..., num_actions]``."""

    obs_ndim = 3  # one unbatched observation is an image

    def __init__(self, spec: ConvQNetworkSpec) -> None:
        super().__init__()
        self.spec = spec
        layers = _torso_layers(spec)
        features = math.prod(spec.torso_output_shape())
        head_norm = spec.norm if spec.normalizes("head") else "none"
        layers.update(
            mlp_layers(
                features,
                spec.hidden_sizes,
                spec.activation,
                head_norm,
                spec.placement,
                spec.norm_groups,
                spec.norm_momentum,
                options=spec.norm_options,
            )
        )
        self.layers = nn.Sequential(layers)
        width = spec.hidden_sizes[-1] if spec.hidden_sizes else features
        self.head = add_q_head(self.layers, width, spec.num_actions, spec.dueling)

    def prepare_obs(self, obs: torch.Tensor) -> torch.Tensor:
        """Observations as the float32, channels-first, scaled ``[N, C, H, W]`` the torso takes."""
        if tuple(obs.shape[-3:]) != self.spec.obs_shape:
            raise QnormError(
                f"this network takes observations of shape {self.spec.obs_shape}, "
                f"got a tensor of shape {tuple(obs.shape)}"
            )
        x = obs.reshape(-1, *self.spec.obs_shape)
        if x.dtype != torch.float32:
            x = x.to(torch.float32)
        if self.spec.channels_last:
            x = x.permute(0, 3, 1, 2)
        return x if self.spec.obs_scale == 1.0 else x * self.spec.obs_scale

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.prepare_obs(obs))
        q = x if self.head is None else self.head(x)
        return q.reshape(*obs.shape[:-3], q.shape[-1])
