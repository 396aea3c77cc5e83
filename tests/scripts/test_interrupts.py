"""Ctrl-C and SIGTERM during training: a final checkpoint, one line saying so, exit 130 / 143."""

from __future__ import annotations

import json
import signal

import pytest
from script_helpers import TINY, TRAIN, assert_one_error_line, run_script, signalled_run

from agents.checkpoint import load_policy

# Long enough never to finish by itself; learning starts late, so steps are quick.
ENDLESS = [*TINY, "--total-timesteps", "10000000", "--learning-starts", "6000"]


@pytest.mark.parametrize(
    ("signals", "status", "name"),
    [
        ((signal.SIGINT,), 130, "SIGINT"),
        ((signal.SIGTERM,), 143, "SIGTERM"),
        ((signal.SIGINT, signal.SIGINT), 130, "SIGINT"),  # the second waits for the save
    ],
)
def test_a_signal_saves_the_final_checkpoint_and_exits_with_its_status(
    tmp_path, signals, status, name
):
    run_dir = tmp_path / "run"
    # Sent once the 10,000-step line shows: past learning_starts, so updates ran too.
    ran = signalled_run(TRAIN, *ENDLESS, "--run-dir", run_dir, signals=signals, when="step 10,000/")
    assert ran.returncode == status, ran.stderr
    assert "Traceback" not in ran.stderr
    lines = ran.stderr.splitlines()
    final = run_dir / "checkpoints" / "final"
    # A run that stopped at a clean point wrote a snapshot and says how to resume; a second
    # signal that came before that point stops at once, with the final checkpoint only.
    if lines[-1].startswith("resume: "):
        assert lines[-1].endswith(f"--resume {run_dir}")
        env = json.loads((run_dir / "state" / "state.json").read_text())["env"]
        lines.pop()
        # A stop inside an episode says the resumed run will start a fresh one there.
        if not env["at_boundary"]:
            assert lines.pop().startswith("the snapshot is inside an episode: ")
        else:
            assert "inside an episode" not in ran.stderr
    else:
        assert len(signals) == 2, ran.stderr
    said = lines[-1]
    assert said.startswith(f"interrupted by {name} at step ")
    assert said.endswith(f"; final checkpoint: {final}")
    step = int(said.split(" at step ")[1].split(";")[0].replace(",", ""))
    assert 10_000 <= step < 10_000_000
    assert json.loads((final / "config.json").read_text())["step"] == step
    assert load_policy(final).step == step
    assert not list((run_dir / "checkpoints").glob(".*"))  # no half-written temporaries


def test_a_run_dir_in_use_refuses_a_second_trainer_and_is_free_once_it_ends(tmp_path):
    run_dir = tmp_path / "run"
    second = {}

    def train_the_same_run_dir():
        second["new"] = run_script(TRAIN, *TINY, "--run-dir", run_dir)
        second["resume"] = run_script(TRAIN, "--resume", run_dir)

    first = signalled_run(
        TRAIN,
        *ENDLESS,
        "--run-dir",
        run_dir,
        "--state-freq",
        "2000",
        signals=(signal.SIGKILL,),  # no clean exit: the kernel still drops the lock
        when="step 10,000/",
        meanwhile=train_the_same_run_dir,
    )
    assert first.returncode == -signal.SIGKILL
    assert "already exists and is not empty" in assert_one_error_line(second["new"])
    assert "is in use by another training process" in assert_one_error_line(second["resume"])
    # The lock died with its process: the run resumes (and is stopped again at once).
    resumed = signalled_run(TRAIN, "--resume", run_dir, signals=(signal.SIGINT,), when="step ")
    assert resumed.returncode == 130, resumed.stderr
