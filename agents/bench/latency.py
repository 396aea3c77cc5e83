"""Microsecond latencies: acting on one state, one update step, folded vs unfolded forward."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from agents.config import DQNConfig
from agents.dqn import DQNAgent
from agents.replay import Batch
from qnorm import QNetworkSpec, acting_mode, build_q_network, fold_batchnorm
from qnorm.numpy_acting import NumpyActor


def median_us(fn, repeats: int = 7, calls: int = 500) -> float:
    """Median over ``repeats`` of the mean time of ``calls`` calls, in microseconds."""
    for _ in range(calls // 5):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - start) / calls * 1e6)
    return float(np.median(samples))


def interleaved_median_us(
    fns: dict[str, Callable[[], object]], repeats: int = 7, seconds: float = 0.25
) -> dict[str, float]:
    """Median over ``repeats`` of each function's mean call time in us, the functions taking turns.

    Each repeat times every function once, one after another, so a slow spell of the machine
    lands on all of them alike and their ratios stay comparable.
    """
    calls = {name: _calls_lasting(fn, seconds) for name, fn in fns.items()}
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            samples[name].append((time.perf_counter() - start) / calls[name] * 1e6)
    return {name: float(np.median(values)) for name, values in samples.items()}


def _calls_lasting(fn: Callable[[], object], seconds: float) -> int:
    """Warm ``fn`` up for about ``seconds``; the number of calls that take that long."""
    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return max(1, round(calls * seconds / (time.perf_counter() - start)))


def _trained_net(spec: QNetworkSpec) -> torch.nn.Module:
    """A network whose norm running statistics have moved off their initial values."""
    net = build_q_network(spec)
    with torch.no_grad():
        for _ in range(20):
            net.train()(torch.randn(64, spec.obs_dim) * 2 + 1)
    return net.eval()


def act_latency(norm: str, hidden: tuple[int, ...]) -> dict[str, float]:
    """One CartPole state to one action: through torch's acting mode and the numpy mirror."""
    spec = QNetworkSpec(4, 2, hidden, norm=norm)
    net = _trained_net(spec)
    obs = np.random.default_rng(0).normal(size=(1, 4)).astype(np.float32)

    def torch_act():
        with acting_mode(net):
            return int(net(torch.from_numpy(obs)).argmax())

    actor = NumpyActor.mirror(net)
    return {"torch": median_us(torch_act), "numpy": median_us(lambda: actor.greedy(obs))}


def update_latency(norm: str, hidden: tuple[int, ...], batch_size: int) -> float:
    """One gradient step (Q_target forward, loss forward, backward, clip, Adam) in us."""
    spec = QNetworkSpec(4, 2, hidden, norm=norm)
    agent = DQNAgent(spec, DQNConfig(batch_size=batch_size, double_dqn=False), seed=0)
    g = torch.Generator().manual_seed(0)
    batch = Batch(
        torch.randn(batch_size, 4, generator=g),
        torch.randint(0, 2, (batch_size,), generator=g),
        torch.randn(batch_size, generator=g),
        torch.randn(batch_size, 4, generator=g),
        torch.zeros(batch_size),
        torch.zeros(batch_size),
    )
    return median_us(lambda: agent.update(batch), repeats=5, calls=200)


def eval_forward_latency(hidden: tuple[int, ...], batch_size: int) -> dict[str, float]:
    """Eval-mode forward in acting mode: no norm, BatchNorm, and BatchNorm folded away."""
    obs = torch.randn(batch_size, 4)
    nets = {
        "none": _trained_net(QNetworkSpec(4, 2, hidden)),
        "batchnorm": _trained_net(QNetworkSpec(4, 2, hidden, norm="batchnorm")),
    }
    nets["batchnorm_folded"] = fold_batchnorm(nets["batchnorm"])

    def forward(net):
        def run():
            with acting_mode(net):
                return net(obs)

        return run

    return {name: median_us(forward(net)) for name, net in nets.items()}
