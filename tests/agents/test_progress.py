"""Training progress: a bar on a terminal, plain lines in a pipe, nothing when turned off."""

import io

import pytest

from agents.progress import LINE_EVERY, Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def feed(progress: Progress, last: int) -> None:
    """Updates every 1000 steps, as the training loop sends them."""
    for step in range(1000, last + 1, 1000):
        progress.update(step, sps=500.0, epsilon=0.25, last_return=12.0 if step > 2000 else None)
    progress.finish(last)
    progress.close()


def test_a_pipe_gets_one_plain_line_per_interval():
    stream = io.StringIO()
    feed(Progress(12_000, enabled=True, stream=stream), 12_000)
    lines = stream.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["5,000/12,000", "10,000/12,000"]
    assert lines[0] == (
        "step 5,000/12,000 (42%)  500 SPS  epsilon 0.250  last return 12.0  ETA 0:00:14"
    )
    assert "\r" not in stream.getvalue()


def test_a_vector_env_step_that_jumps_past_an_interval_still_prints_once():
    stream = io.StringIO()
    progress = Progress(20_000, enabled=True, stream=stream)
    for step in (4_998, 5_006, 9_000, 10_004, 10_012):
        progress.update(step, 100.0, 0.1, None)
    assert [line.split()[1] for line in stream.getvalue().splitlines()] == [
        "5,006/20,000",
        "10,004/20,000",
    ]


def test_a_terminal_gets_the_bar_and_no_lines():
    stream = Terminal()
    feed(Progress(3 * LINE_EVERY, enabled=True, stream=stream), 3 * LINE_EVERY)
    text = stream.getvalue()
    assert "\r" in text and "15000/15000" in text
    assert "ETA" not in text


@pytest.mark.parametrize("stream", [io.StringIO(), Terminal()])
def test_progress_off_prints_nothing(stream):
    feed(Progress(12_000, enabled=False, stream=stream), 12_000)
    assert stream.getvalue() == ""
