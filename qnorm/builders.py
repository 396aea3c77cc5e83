"""Any Q-network spec, MLP or conv: rebuilt from its dict by kind, and built into a network."""

from __future__ import annotations

from qnorm.conv_networks import ConvQNetwork, ConvQNetworkSpec
from qnorm.errors import QnormError
from qnorm.networks import QNetwork, QNetworkSpec

SPEC_TYPES = {spec_type.kind: spec_type for spec_type in (QNetworkSpec, ConvQNetworkSpec)}


def spec_from_dict(data: dict) -> QNetworkSpec | ConvQNetworkSpec:
    """The spec ``to_dict`` stored, of the type its ``kind`` names (none: MLP, older files)."""
    if not isinstance(data, dict):
        raise QnormError(f"a network spec must be a JSON object, not {type(data).__name__}")
    kind = data.get("kind", QNetworkSpec.kind)
    spec_type = SPEC_TYPES.get(kind) if isinstance(kind, str) else None
    if spec_type is None:
        known = ", ".join(SPEC_TYPES)
        raise QnormError(f"unknown network kind {kind!r}; known kinds are: {known}")
    return spec_type.from_dict(data)


def build_q_network(spec: QNetworkSpec | ConvQNetworkSpec) -> QNetwork | ConvQNetwork:
    """A freshly initialised Q-network for ``spec``, an MLP or a conv spec."""
    if isinstance(spec, ConvQNetworkSpec):
        return ConvQNetwork(spec)
    if isinstance(spec, QNetworkSpec):
        return QNetwork(spec)
    raise TypeError(f"expected a QNetworkSpec or ConvQNetworkSpec, got {type(spec).__name__}")
