"""TensorBoard logging with the common RL tag layout plus qnorm's ``norm/*`` diagnostics."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from qnorm import is_batch_statistics_module


def hyperparameter_table(config: dict) -> str:
    """A Markdown table of ``section.field | value`` rows."""
    rows = ["|parameter|value|", "|-|-|"]
    for section, values in config.items():
        for name, value in values.items():
            rows.append(f"|{section}.{name}|{value}|")
    return "\n".join(rows)


class RunLogger:
    """Scalars, text and histograms of one run, written to its TensorBoard event files."""

    def __init__(self, run_dir: Path, config: dict, purge_step: int | None = None) -> None:
        # A resumed run purges what the killed one logged after its snapshot: TensorBoard
        # drops those points, so the curves continue without duplicates or gaps.
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)
        if purge_step is None:
            self.writer.add_text("hyperparameters", hyperparameter_table(config), 0)

    def scalar(self, tag: str, value: float, step: int) -> None:
        """One scalar point."""
        self.writer.add_scalar(tag, value, step)

    def episode(self, episodic_return: float, length: int, step: int) -> None:
        """The return and length of one finished training episode."""
        self.writer.add_scalar("charts/episodic_return", episodic_return, step)
        self.writer.add_scalar("charts/episodic_length", length, step)

    def norm_statistics(self, net: nn.Module, step: int) -> None:
        """Histograms of every batch-statistics norm's running mean and variance."""
        for name, module in net.named_modules():
            if is_batch_statistics_module(module) and module.running_mean is not None:
                self.writer.add_histogram(f"norm/{name}/running_mean", module.running_mean, step)
                self.writer.add_histogram(f"norm/{name}/running_var", module.running_var, step)

    def weight_norms(self, net: nn.Module, step: int) -> None:
        """The L2 norm of every Linear and Conv2d weight (``norm/weight_norm/<layer>``).

        A weight followed by a batch-statistics norm is scale invariant: its updates change
        the function by about lr / norm, so a growing norm is a falling effective step size.
        """
        for name, module in net.named_modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                value = float(torch.linalg.vector_norm(module.weight.detach()))
                self.writer.add_scalar(f"norm/weight_norm/{name}", value, step)

    def close(self) -> None:
        """Flush and close the event files."""
        self.writer.close()
