"""Helpers shared by the qnorm tests: network state snapshots, modes, temporary norm kinds."""

from __future__ import annotations

import contextlib

import torch

import qnorm
from qnorm import norms


def snapshot(net):
    """A copy of every parameter and buffer of ``net``."""
    return {name: t.detach().clone() for name, t in net.state_dict().items()}


def assert_same_state(before, net):
    """``net``'s parameters and buffers equal the snapshot ``before``, bit for bit."""
    after = net.state_dict()
    assert list(before) == list(after)
    for name, tensor in before.items():
        assert torch.equal(tensor, after[name]), f"{name} changed"


def modes(net):
    """The ``training`` flag of every module of ``net``."""
    return [m.training for m in net.modules()]


@contextlib.contextmanager
def registered(name, factory, **kwargs):
    """A norm kind registered for the body only, so tests never leak registry entries."""
    assert name not in qnorm.norm_names()
    qnorm.register_norm(name, factory, **kwargs)
    try:
        yield
    finally:
        del norms._REGISTRY[name]
