"""Ctrl-C and SIGTERM during training: stop at a clean point, save, and exit 130 or 143.

Inside ``interruptible()`` the first of either signal raises ``Interrupted`` in the training
loop; later ones are ignored until the block ends, so the save on the way out is never cut
short by an impatient second Ctrl-C (checkpoint writes are atomic anyway).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """Training stopped by a signal; what was saved on the way out, and the exit status.

    A BaseException, like KeyboardInterrupt: no ``except Exception`` on the way (an env's
    error handling, say) may swallow it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.step: int | None = None
        self.checkpoint: Path | None = None

    @property
    def exit_status(self) -> int:
        """The shell's convention: 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + self.signum

    def message(self) -> str:
        """One line for the user: which signal, where, and what was saved."""
        where = f" at step {self.step:,}" if self.step is not None else ""
        saved = f"; final checkpoint: {self.checkpoint}" if self.checkpoint else ""
        return f"interrupted by {signal.Signals(self.signum).name}{where}{saved}"


def _in_main_thread() -> bool:
    # Python delivers signals to the main thread only; elsewhere (a Ray task's thread, say)
    # handlers cannot be installed and the defaults stay.
    return threading.current_thread() is threading.main_thread()


@contextmanager
def interruptible() -> Iterator[None]:
    """The first SIGINT or SIGTERM raises ``Interrupted`` in the block; later ones are ignored.

    The old handlers return when the block ends.
    """
    if not _in_main_thread():
        yield
        return
    received: list[int] = []

    def on_signal(signum, frame):
        received.append(signum)
        if len(received) == 1:
            raise Interrupted(signum)

    previous = {s: signal.signal(s, on_signal) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
