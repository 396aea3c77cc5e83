"""MLP Q-networks built from a typed spec, with the norm kind and its placement as switches."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from qnorm.errors import QnormError
from qnorm.norms import get_norm_kind, make_norm

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
}
PLACEMENTS = ("before", "after")


@dataclass(frozen=True)
class QNetworkSpec:
    """Everything needed to rebuild a Q-network: sizes, activation and normalization."""

    obs_dim: int
    num_actions: int
    hidden_sizes: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    norm: str = "none"
    placement: str = "before"  # norm before or after the activation
    input_norm: bool = False  # also normalize the raw observation
    dueling: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        get_norm_kind(self.norm)
        if self.activation not in ACTIVATIONS:
            known = ", ".join(ACTIVATIONS)
            raise QnormError(f"unknown activation {self.activation!r}; known: {known}")
        if self.placement not in PLACEMENTS:
            raise QnormError(f"norm placement must be 'before' or 'after', not {self.placement!r}")
        if self.obs_dim < 1 or self.num_actions < 1 or any(h < 1 for h in self.hidden_sizes):
            raise QnormError("observation size, number of actions and hidden sizes must be >= 1")

    def to_dict(self) -> dict:
        """A JSON-ready dict that ``from_dict`` turns back into an equal spec."""
        data = asdict(self)
        data["hidden_sizes"] = list(self.hidden_sizes)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> QNetworkSpec:
        """The spec stored by ``to_dict``; unknown keys are an error."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise QnormError(f"network spec has unknown fields: {', '.join(unknown)}")
        return cls(**data)


class DuelingHead(nn.Module):
    """Q = V + A - mean(A): a state value plus centred action advantages."""

    def __init__(self, in_features: int, num_actions: int) -> None:
        super().__init__()
        self.value = nn.Linear(in_features, 1)
        self.advantage = nn.Linear(in_features, num_actions)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        advantage = self.advantage(x)
        return self.value(x) + advantage - advantage.mean(dim=-1, keepdim=True)


class QNetwork(nn.Module):
    """An MLP mapping observations ``[..., obs_dim]`` to Q-values ``[..., num_actions]``."""

    obs_ndim = 1  # one unbatched observation is a 1-D tensor

    def __init__(self, spec: QNetworkSpec) -> None:
        super().__init__()
        self.spec = spec
        self.layers = nn.Sequential(_body_layers(spec))
        width = spec.hidden_sizes[-1] if spec.hidden_sizes else spec.obs_dim
        if spec.dueling:
            self.head = DuelingHead(width, spec.num_actions)
        else:
            self.layers.add_module("q_head", nn.Linear(width, spec.num_actions))
            self.head = None

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs if obs.dtype == torch.float32 else obs.to(torch.float32)
        # Each layer's forward is called directly: per-module hook dispatch costs more than
        # a small layer's arithmetic when acting on one state. Hooks on the QNetwork itself
        # still run; hooks registered on its inner layers do not.
        for layer in self.layers:
            x = layer.forward(x)
        return x if self.head is None else self.head(x)


def _body_layers(spec: QNetworkSpec) -> OrderedDict[str, nn.Module]:
    """Linear, norm and activation layers in the order the spec's placement asks for."""
    batch_stats = get_norm_kind(spec.norm).uses_batch_statistics
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if spec.input_norm and spec.norm != "none":
        layers["input_norm"] = make_norm(spec.norm, spec.obs_dim)
    width = spec.obs_dim
    for i, hidden in enumerate(spec.hidden_sizes, start=1):
        norm = make_norm(spec.norm, hidden)
        # A batch-statistics norm right after the Linear subtracts the mean, so a bias is dead.
        bias = not (norm is not None and batch_stats and spec.placement == "before")
        layers[f"linear{i}"] = nn.Linear(width, hidden, bias=bias)
        activation = ACTIVATIONS[spec.activation]()
        if norm is not None and spec.placement == "before":
            layers[f"norm{i}"] = norm
        layers[f"act{i}"] = activation
        if norm is not None and spec.placement == "after":
            layers[f"norm{i}"] = norm
        width = hidden
    return layers


def build_q_network(spec: QNetworkSpec) -> QNetwork:
    """A freshly initialised Q-network for ``spec``."""
    return QNetwork(spec)
