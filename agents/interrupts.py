"""Ctrl-C and SIGTERM during training: stop at a clean point, save, and exit 130 or 143.

Inside ``stop_requests()`` the first SIGINT or SIGTERM only asks the training loop to stop:
it finishes its current step, writes a training-state snapshot and the final checkpoint,
then raises ``Interrupted``. A Ctrl-C (SIGINT) that comes inside an episode of a one-env run
first lets that episode end, for at most FINISH_EPISODE_STEPS more steps: an env cannot be
saved mid-episode, so only a snapshot at an episode boundary resumes exactly. SIGTERM, which
a scheduler sends shortly before it kills, stops at the next step. A second signal stops
sooner: during that wait at the next step, otherwise at once (the final checkpoint is still
written; the previous snapshot stays as it was). Signals that arrive while the way-out
files are written are ignored, so an impatient Ctrl-C never cuts a save short.
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

    def __init__(self, signum: int, clean: bool) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.clean = clean  # raised at a step boundary, where a snapshot can be taken
        self.step: int | None = None
        self.checkpoint: Path | None = None
        self.snapshot: Path | None = None
        self.fresh_episodes_on_resume = False  # the snapshot was taken inside an episode

    def __reduce__(self):  # picklable, so a study's worker process can hand it back
        return (type(self), (self.signum, self.clean))

    @property
    def exit_status(self) -> int:
        """The shell's convention: 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + self.signum

    def message(self) -> str:
        """One line for the user: which signal, where, and what was saved."""
        where = f" at step {self.step:,}" if self.step is not None else ""
        saved = f"; final checkpoint: {self.checkpoint}" if self.checkpoint else ""
        return f"interrupted by {signal.Signals(self.signum).name}{where}{saved}"

    def resume_note(self) -> str | None:
        """What a resume from this stop's snapshot will not repeat, if anything."""
        if self.snapshot is None or not self.fresh_episodes_on_resume:
            return None
        return (
            "the snapshot is inside an episode: a resumed run starts a fresh episode there, "
            "so it will not repeat the uninterrupted run bit for bit"
        )


# After a Ctrl-C inside an episode, at most this many more steps for the episode to end: a
# CartPole or MinAtar episode ends well within it, an Atari one may not (then the run stops
# inside it, as after a SIGTERM).
FINISH_EPISODE_STEPS = 5_000
FINISHING_EPISODE = (
    f"Ctrl-C: stopping when this episode ends (at most {FINISH_EPISODE_STEPS:,} steps), so the "
    "run resumes exactly; Ctrl-C again stops at the next step"
)


class StopRequests:
    """The signals received while training runs."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.saving = False  # the way-out files are being written: ignore further signals
        self.finish_by: int | None = None  # Ctrl-C inside an episode: its last step to end

    def on_signal(self, signum: int, frame) -> None:
        self.received.append(signum)
        if self.saving:
            return
        waiting = self.finish_by is not None  # then a second signal stops at the next step
        if len(self.received) == (3 if waiting else 2):  # asked again: stop now
            raise Interrupted(self.received[0], clean=False)

    def check(self, step: int, mid_episode: bool) -> bool:
        """At a clean point of the loop: stop there if a signal asked for it, or go on to
        the end of the episode (see the module's text). True when that wait begins."""
        if not self.received:
            return False
        if self._finishes_episode(step, mid_episode):
            begins = self.finish_by is None
            if begins:
                self.finish_by = step + FINISH_EPISODE_STEPS
            return begins
        raise Interrupted(self.received[0], clean=True)

    def _finishes_episode(self, step: int, mid_episode: bool) -> bool:
        if not mid_episode or self.received != [signal.SIGINT]:
            return False
        return self.finish_by is None or step < self.finish_by


@contextmanager
def stop_requests() -> Iterator[StopRequests]:
    """SIGINT and SIGTERM become stop requests inside the block; the old handlers return after.

    Python delivers signals to the main thread only; elsewhere (a Ray task's thread, say)
    handlers cannot be installed and the defaults stay.
    """
    requests = StopRequests()
    if threading.current_thread() is not threading.main_thread():
        yield requests
        return
    previous = {s: signal.signal(s, requests.on_signal) for s in SIGNALS}
    try:
        yield requests
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
