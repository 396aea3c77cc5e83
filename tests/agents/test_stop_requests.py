"""When a stop request ends training: at once, at the next step, or at the episode's end."""

from __future__ import annotations

import signal

import pytest

from agents.interrupts import FINISH_EPISODE_STEPS, Interrupted, StopRequests


def asked(*signums: int) -> StopRequests:
    requests = StopRequests()
    requests.received.extend(signums)
    return requests


def test_no_signal_never_stops():
    assert StopRequests().check(step=10, mid_episode=True) is False


@pytest.mark.parametrize("mid_episode", [False, True])
def test_sigterm_stops_at_the_next_step_even_inside_an_episode(mid_episode):
    with pytest.raises(Interrupted) as stop:
        asked(signal.SIGTERM).check(step=10, mid_episode=mid_episode)
    assert stop.value.clean and stop.value.signum == signal.SIGTERM


def test_ctrl_c_at_an_episode_boundary_stops_there():
    with pytest.raises(Interrupted) as stop:
        asked(signal.SIGINT).check(step=10, mid_episode=False)
    assert stop.value.clean


def test_ctrl_c_inside_an_episode_waits_for_its_end():
    requests = asked(signal.SIGINT)
    assert requests.check(step=10, mid_episode=True) is True  # the wait begins: say so once
    assert requests.check(step=11, mid_episode=True) is False
    with pytest.raises(Interrupted) as stop:
        requests.check(step=12, mid_episode=False)
    assert stop.value.clean


def test_ctrl_c_inside_an_endless_episode_stops_after_the_limit():
    requests = asked(signal.SIGINT)
    requests.check(step=10, mid_episode=True)
    assert requests.check(step=9 + FINISH_EPISODE_STEPS, mid_episode=True) is False
    with pytest.raises(Interrupted) as stop:
        requests.check(step=10 + FINISH_EPISODE_STEPS, mid_episode=True)
    assert stop.value.clean


def test_a_second_ctrl_c_while_waiting_stops_at_the_next_step_and_a_third_at_once():
    requests = asked(signal.SIGINT)
    requests.check(step=10, mid_episode=True)
    requests.on_signal(signal.SIGINT, None)  # the second: no exception inside the step
    with pytest.raises(Interrupted) as stop:
        requests.check(step=11, mid_episode=True)
    assert stop.value.clean
    with pytest.raises(Interrupted) as at_once:
        requests.on_signal(signal.SIGINT, None)
    assert not at_once.value.clean


def test_a_second_signal_before_any_wait_stops_at_once():
    requests = StopRequests()
    requests.on_signal(signal.SIGINT, None)
    with pytest.raises(Interrupted) as stop:
        requests.on_signal(signal.SIGINT, None)
    assert not stop.value.clean


def test_signals_while_saving_are_ignored():
    requests = asked(signal.SIGINT)
    requests.saving = True
    requests.on_signal(signal.SIGINT, None)
    requests.on_signal(signal.SIGINT, None)
    assert requests.received == [signal.SIGINT] * 3
