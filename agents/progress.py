"""Training progress: a tqdm bar on a terminal, a plain line every few thousand steps elsewhere.

Output piped to a log (``make train | tee log``) gets no bar, which would print nothing for a
long while or fill the log with carriage returns; it gets one short line per LINE_EVERY steps.
"""

from __future__ import annotations

import datetime
import sys
from typing import TextIO

from tqdm import tqdm

LINE_EVERY = 5_000  # env steps between progress lines off a terminal


class Progress:
    """Reports training progress on ``stream`` (stderr), the way that suits where it goes."""

    def __init__(
        self, total: int, enabled: bool, stream: TextIO | None = None, initial: int = 0
    ) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        on_terminal = self.stream.isatty()
        self.bar = tqdm(
            total=total,
            initial=initial,  # a resumed run's bar starts where the run was
            unit="step",
            dynamic_ncols=True,
            file=self.stream,
            disable=not (enabled and on_terminal),
        )
        self.lines = enabled and not on_terminal
        self.next_line = (initial // LINE_EVERY + 1) * LINE_EVERY

    def update(self, step: int, sps: float, epsilon: float, last_return: float | None) -> None:
        """Advance to ``step`` with the current speed, epsilon and last episode's return."""
        ret = "-" if last_return is None else f"{last_return:.1f}"
        if not self.bar.disable:
            self.bar.set_postfix(sps=f"{sps:.0f}", eps=f"{epsilon:.3f}", ret=ret, refresh=False)
            self.bar.update(step - self.bar.n)
        if self.lines and step >= self.next_line:
            self.next_line = (step // LINE_EVERY + 1) * LINE_EVERY
            print(self.line(step, sps, epsilon, ret), file=self.stream, flush=True)

    def line(self, step: int, sps: float, epsilon: float, ret: str) -> str:
        """One progress line: where the run is, how fast, and how long it has left."""
        eta = datetime.timedelta(seconds=round(max(self.total - step, 0) / max(sps, 1e-9)))
        return (
            f"step {step:,}/{self.total:,} ({100 * step / self.total:.0f}%)  {sps:.0f} SPS  "
            f"epsilon {epsilon:.3f}  last return {ret}  ETA {eta}"
        )

    def note(self, text: str) -> None:
        """One line for the user, above the bar (nothing when progress is off)."""
        if not self.bar.disable:
            self.bar.write(text, file=self.stream)
        elif self.lines:
            print(text, file=self.stream, flush=True)

    def finish(self, step: int) -> None:
        """Bring the bar to the last step (updates come per 1000 steps only)."""
        if not self.bar.disable:
            self.bar.update(step - self.bar.n)

    def close(self) -> None:
        """Close the bar."""
        self.bar.close()
