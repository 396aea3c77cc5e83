"""MLP Q-networks built from a typed spec, with the norm kind and its placement as switches."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass, field, fields

import torch
from torch import nn

from qnorm.errors import QnormError, check_groups
from qnorm.norms import get_norm_kind, make_norm

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
}
PLACEMENTS = ("before", "after")
NORM_LAYERS = ("all", "first", "not_last")  # which hidden layers of an MLP get a norm
# BatchRenorm's options a spec may set (the module's keyword arguments beyond momentum).
RENORM_OPTIONS = {"rmax", "dmax", "warmup_steps", "unbiased_running_var"}


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
    norm_groups: int = 8  # group count of kinds that take one (groupnorm)
    norm_momentum: float | None = None  # batch-statistics kinds' momentum; None: their default
    norm_options: dict = field(default_factory=dict)  # more options of the kind (RENORM_OPTIONS)
    norm_layers: str = "all"  # which hidden layers get a norm: all, first or not_last

    kind = "mlp"  # a class constant, not a field: names the spec type in ``to_dict``

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        check_common_fields(self)
        if self.obs_dim < 1 or self.num_actions < 1 or any(h < 1 for h in self.hidden_sizes):
            raise QnormError("observation size, number of actions and hidden sizes must be >= 1")
        if self.norm_layers not in NORM_LAYERS:
            known = ", ".join(NORM_LAYERS)
            raise QnormError(f"norm_layers must be one of {known}, not {self.norm_layers!r}")
        widths = [*self.hidden_sizes, *([self.obs_dim] if self.input_norm else [])]
        check_norm_widths(self.norm, self.norm_groups, widths)

    def normalized_layers(self) -> set[int]:
        """The hidden layers (numbered from 1) that get a norm."""
        depth = len(self.hidden_sizes)
        last = {"all": depth, "first": min(depth, 1), "not_last": depth - 1}[self.norm_layers]
        return set(range(1, last + 1))

    def to_dict(self) -> dict:
        """A JSON-ready dict that ``from_dict`` turns back into an equal spec."""
        return spec_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> QNetworkSpec:
        """The spec stored by ``to_dict`` (or one without ``kind``); unknown keys are an error."""
        return spec_from_fields(cls, data)


def check_common_fields(spec) -> None:
    """Validate the fields both spec types share: norm, activation, placement, norm_groups."""
    get_norm_kind(spec.norm)
    if spec.activation not in ACTIVATIONS:
        known = ", ".join(ACTIVATIONS)
        raise QnormError(f"unknown activation {spec.activation!r}; known: {known}")
    if spec.placement not in PLACEMENTS:
        raise QnormError(f"norm placement must be 'before' or 'after', not {spec.placement!r}")
    if spec.norm_groups < 1:
        raise QnormError(f"norm_groups must be >= 1, got {spec.norm_groups}")
    if spec.norm_momentum is not None and not 0.0 < spec.norm_momentum <= 1.0:
        raise QnormError(f"norm_momentum must be in (0, 1], got {spec.norm_momentum}")
    allowed = RENORM_OPTIONS if spec.norm == "batchrenorm" else set()
    unknown = sorted(set(spec.norm_options) - allowed)
    if unknown:
        raise QnormError(
            f"norm {spec.norm!r} takes no option {', '.join(unknown)}"
            + (f"; it takes {', '.join(sorted(allowed))}" if allowed else "")
        )


def check_norm_widths(norm: str, groups: int, widths) -> None:
    """Raise a QnormError if a grouped norm kind cannot split one of ``widths`` evenly."""
    if get_norm_kind(norm).takes_groups:
        for width in widths:
            check_groups(width, groups)


def spec_to_dict(spec) -> dict:
    """A spec dataclass as a JSON-ready dict: its ``kind`` first, tuples as lists."""
    data = {"kind": spec.kind}
    for name, value in asdict(spec).items():
        data[name] = list(value) if isinstance(value, tuple) else value
    return data


def spec_from_fields(cls, data: dict):
    """A ``cls`` spec from ``to_dict``'s output; a missing ``kind`` is taken as ``cls``'s."""
    data = dict(data)
    kind = data.pop("kind", cls.kind)
    if kind != cls.kind:
        raise QnormError(f"a network spec of kind {kind!r} is not a {cls.kind} spec")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise QnormError(f"network spec has unknown fields: {', '.join(unknown)}")
    if data.get("norm") == "batchrenorm" and "norm_options" not in data:
        # Saved before the option existed: its running variance was the unbiased one.
        data["norm_options"] = {"unbiased_running_var": True}
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
        self.head = add_q_head(self.layers, width, spec.num_actions, spec.dueling)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs if obs.dtype == torch.float32 else obs.to(torch.float32)
        # Each layer's forward is called directly: per-module hook dispatch costs more than
        # a small layer's arithmetic when acting on one state. Hooks on the QNetwork itself
        # still run; hooks registered on its inner layers do not.
        for layer in self.layers:
            x = layer.forward(x)
        return x if self.head is None else self.head(x)


def add_q_head(
    layers: nn.Sequential, width: int, num_actions: int, dueling: bool
) -> DuelingHead | None:
    """Append the Q head to ``layers``; a dueling head is returned to sit beside them instead."""
    if dueling:
        return DuelingHead(width, num_actions)
    layers.add_module("q_head", nn.Linear(width, num_actions))
    return None


def _body_layers(spec: QNetworkSpec) -> OrderedDict[str, nn.Module]:
    """The optional input norm, then the hidden layers."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if spec.input_norm and spec.norm != "none":
        layers["input_norm"] = make_norm(
            spec.norm, spec.obs_dim, groups=spec.norm_groups, momentum=spec.norm_momentum
        )
    layers.update(
        mlp_layers(
            spec.obs_dim,
            spec.hidden_sizes,
            spec.activation,
            spec.norm,
            spec.placement,
            spec.norm_groups,
            spec.norm_momentum,
            options=spec.norm_options,
            normalized=spec.normalized_layers(),
        )
    )
    return layers


def mlp_layers(
    in_features: int,
    hidden_sizes: tuple[int, ...],
    activation: str,
    norm: str,
    placement: str,
    groups: int,
    momentum: float | None = None,
    *,
    options: dict | None = None,
    normalized: set[int] | None = None,
) -> OrderedDict[str, nn.Module]:
    """Linear, norm and activation layers in the order ``placement`` asks for.

    ``normalized`` numbers the hidden layers (from 1) that get a norm; None: every one.
    """
    batch_stats = get_norm_kind(norm).uses_batch_statistics
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    width = in_features
    for i, hidden in enumerate(hidden_sizes, start=1):
        kind = norm if normalized is None or i in normalized else "none"
        norm_layer = make_norm(kind, hidden, groups=groups, momentum=momentum, options=options)
        # A batch-statistics norm right after the Linear subtracts the mean, so a bias is dead.
        bias = not (norm_layer is not None and batch_stats and placement == "before")
        layers[f"linear{i}"] = nn.Linear(width, hidden, bias=bias)
        if norm_layer is not None and placement == "before":
            layers[f"norm{i}"] = norm_layer
        layers[f"act{i}"] = ACTIVATIONS[activation]()
        if norm_layer is not None and placement == "after":
            layers[f"norm{i}"] = norm_layer
        width = hidden
    return layers
