"""scripts/train.py run end to end in fresh processes, as a user runs it."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from script_helpers import (
    EVALUATE,
    REPO,
    TINY,
    TRAIN,
    Ran,
    assert_clean_success,
    run_script,
    run_scripts,
    script_env,
)

SB3_FLAGS = [
    "--learning-rate",
    "--buffer-size",
    "--learning-starts",
    "--batch-size",
    "--tau",
    "--gamma",
    "--train-freq",
    "--gradient-steps",
    "--target-update-interval",
    "--exploration-fraction",
    "--exploration-initial-eps",
    "--exploration-final-eps",
    "--max-grad-norm",
]


def printed(stdout: str, label: str) -> str:
    """The text after ``label:`` on the one stdout line that starts with it."""
    lines = [line for line in stdout.splitlines() if line.startswith(label + ":")]
    assert len(lines) == 1, f"expected one {label!r} line in:\n{stdout}"
    return lines[0][len(label) + 1 :].strip()


def assert_no_progress_bar(stderr: str) -> None:
    """tqdm draws with carriage returns and rate units; none of it may reach a pipe."""
    assert "\r" not in stderr
    assert "it/s" not in stderr
    assert "step/s" not in stderr
    assert not re.search(r"\d+%\|", stderr), stderr


def assert_run_outputs(run_dir: Path) -> tuple[dict, dict]:
    """The files every run writes; returns (run config, final checkpoint config)."""
    events = list(run_dir.glob("events.out.tfevents.*"))
    assert events, sorted(p.name for p in run_dir.iterdir())
    assert all(p.stat().st_size > 0 for p in events)
    final = run_dir / "checkpoints" / "final"
    assert (final / "model.safetensors").stat().st_size > 0
    run_config = json.loads((run_dir / "config.json").read_text())
    ckpt_config = json.loads((final / "config.json").read_text())
    return run_config, ckpt_config


NORMS = [
    ("none", "before"),
    ("batchnorm", "before"),
    ("batchnorm", "after"),
    ("layernorm", "before"),
    ("rmsnorm", "before"),
]


@pytest.fixture(scope="module")
def norm_runs(tmp_path_factory) -> dict[tuple[str, str], tuple[Path, Ran, Ran | None]]:
    """A tiny run per norm, then the evaluate command each printed: (run dir, train, evaluate).

    The runs are independent, so they go two at a time; the assertions are in the tests.
    """
    jobs, run_dirs = {}, {}
    for norm, placement in NORMS:
        # A space in the name checks that the printed commands are shell-quoted.
        run_dir = tmp_path_factory.mktemp(f"{norm}-{placement}") / "my run"
        run_dirs[norm, placement] = run_dir
        args = [*TINY, "--norm", norm, "--norm-placement", placement, "--seed", "1"]
        jobs[norm, placement] = ((TRAIN, *args, "--run-dir", run_dir), {})
    trained = run_scripts(jobs)
    evaluate_jobs = {}
    for key, ran in trained.items():
        lines = [line for line in ran.stdout.splitlines() if line.startswith("evaluate:")]
        argv = shlex.split(lines[0].removeprefix("evaluate:")) if len(lines) == 1 else []
        if len(argv) >= 2 and argv[1] == "scripts/evaluate.py":
            # The command the user is told to run, run as printed, from the repository root.
            evaluate_jobs[key] = ((argv[1], *argv[2:]), {})
    evaluated = run_scripts(evaluate_jobs)
    return {key: (run_dirs[key], trained[key], evaluated.get(key)) for key in trained}


@pytest.mark.parametrize(("norm", "placement"), NORMS)
def test_tiny_run_per_norm(norm_runs, norm, placement):
    run_dir, ran, evaluated = norm_runs[norm, placement]
    assert_clean_success(ran)
    assert_no_progress_bar(ran.stderr)

    assert Path(printed(ran.stdout, "final checkpoint")) == run_dir / "checkpoints" / "final"
    evaluate_cmd = printed(ran.stdout, "evaluate")
    python, script, *rest = shlex.split(evaluate_cmd)
    assert Path(REPO, python).absolute() == Path(sys.executable).absolute()
    assert (script, rest) == ("scripts/evaluate.py", [str(run_dir)])
    tensorboard_cmd = printed(ran.stdout, "tensorboard")
    tensorboard, *logdir = shlex.split(tensorboard_cmd)
    assert logdir == ["--logdir", str(run_dir)]  # the named run dir, not what lies around it
    beside = Path(sys.executable).parent / "tensorboard"  # the one a venv install puts there
    expected = beside if beside.is_file() else Path(REPO, "tensorboard")
    assert Path(REPO, tensorboard).absolute() == expected

    run_config, ckpt_config = assert_run_outputs(run_dir)
    assert run_config["network"]["norm"] == norm
    assert run_config["network"]["norm_placement"] == placement
    assert run_config["network"]["hidden_sizes"] == [32, 32]
    assert run_config["run"]["run_dir"] == str(run_dir)
    assert run_config["dqn"]["batch_size"] == 16
    assert ckpt_config["env_id"] == "CartPole-v1"
    assert ckpt_config["norm"] == norm
    assert ckpt_config["network"]["placement"] == placement
    assert ckpt_config["step"] == 600
    assert ckpt_config["train_config"] == run_config

    # The printed evaluate command, run by the fixture exactly as printed.
    assert evaluated is not None
    assert_clean_success(evaluated)
    assert "mean return" in evaluated.stdout
    assert f"norm {norm}" in evaluated.stdout


def test_default_run_dir_is_under_runs(tmp_path):
    ran = run_script(TRAIN, *TINY, "--norm", "layernorm", "--seed", "7", cwd=tmp_path)
    assert_clean_success(ran)
    assert_no_progress_bar(ran.stderr)
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1, runs
    assert re.fullmatch(r"CartPole-v1__layernorm__7__\d{8}-\d{6}", runs[0].name), runs[0].name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    run_config, ckpt_config = assert_run_outputs(runs[0])
    assert run_config["run"]["seed"] == 7
    assert ckpt_config["norm"] == "layernorm"
    final = Path(printed(ran.stdout, "final checkpoint"))
    assert (tmp_path / final).resolve() == (runs[0] / "checkpoints" / "final").resolve()
    # The default layout: the logdir is runs/, which holds this run and the ones beside it.
    assert shlex.split(printed(ran.stdout, "tensorboard"))[1:] == ["--logdir", "runs"]


def test_two_envs(tmp_path):
    run_dir = tmp_path / "run"
    ran = run_script(TRAIN, *TINY, "--num-envs", "2", "--norm", "batchnorm", "--run-dir", run_dir)
    assert_clean_success(ran)
    run_config, ckpt_config = assert_run_outputs(run_dir)
    assert run_config["run"]["num_envs"] == 2
    assert ckpt_config["step"] == 600
    ran = run_script(EVALUATE, run_dir, "--episodes", "2", "--json")
    assert_clean_success(ran)
    assert json.loads(ran.stdout)["episodes"] == 2


def test_lunarlander_trains_on_its_shipped_tuned_preset(tmp_path):
    """The README's LunarLander-v3 path: Box2D from the box2d extra, the variant's shipped
    tuned preset taken by the plain flags, a policy that evaluates in a fresh process."""
    pytest.importorskip("Box2D", reason="LunarLander-v3 needs the box2d extra")
    shipped = REPO / "agents" / "tuned_presets.json"
    preset = json.loads(shipped.read_text())["LunarLander-v3"]["layernorm"]["settings"]
    env = script_env(QNORM_TUNED_PRESETS=str(shipped))
    run_dir = tmp_path / "run"
    short = ["--total-timesteps", "600", "--learning-starts", "100", "--eval-freq", "0"]
    ran = run_script(
        TRAIN, "--env-id", "LunarLander-v3", "--norm", "layernorm", *short, "--run-dir", run_dir,
        env=env,
    )  # fmt: skip
    assert_clean_success(ran)
    run_config, ckpt_config = assert_run_outputs(run_dir)
    assert run_config["run"]["tuned_preset"] is True
    assert run_config["dqn"]["learning_rate"] == preset["dqn.learning_rate"]
    assert run_config["dqn"]["n_step"] == preset["dqn.n_step"]
    assert run_config["dqn"]["learning_starts"] == 100  # an explicit flag wins over the preset
    assert ckpt_config["step"] == 600
    ran = run_script(EVALUATE, run_dir, "--episodes", "1", "--json", env=env)
    assert_clean_success(ran)
    assert json.loads(ran.stdout)["episodes"] == 1


def test_help_lists_the_flags():
    ran = run_script(TRAIN, "--help")
    assert_clean_success(ran)
    flags = set(re.findall(r"--[a-z][a-z-]*", ran.stdout))
    expected = [*SB3_FLAGS, "--hidden-sizes", "--norm", "--norm-placement", "--num-envs"]
    missing = [flag for flag in expected if flag not in flags]
    assert not missing, ran.stdout
    for norm in ("none", "batchnorm", "layernorm", "rmsnorm"):
        assert norm in ran.stdout


def test_event_files_hold_the_rl_tags(trained_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(trained_run))
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    assert {"charts/episodic_return", "charts/episodic_length", "losses/td_loss"} <= scalars
    returns = [event.value for event in acc.Scalars("charts/episodic_return")]
    assert returns
    assert all(r >= 1 for r in returns)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs a Linux pty")
def test_progress_bar_draws_on_a_terminal(tmp_path):
    """The other side of the quiet-pipe checks: on a terminal the bar is there."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    master, slave = pty.openpty()
    # A new pty is 0 columns wide, and tqdm draws nothing on it: make it a 120-column terminal.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    try:
        proc = subprocess.Popen(
            [sys.executable, str(TRAIN), *TINY, "--run-dir", str(tmp_path / "run")],
            cwd=REPO,
            env=script_env(),
            stdout=subprocess.DEVNULL,
            stderr=slave,
        )
        os.close(slave)
        chunks = []
        while True:
            if not select.select([master], [], [], 300)[0]:  # a hung child fails, not blocks
                proc.kill()
                pytest.fail("train.py wrote nothing to its terminal for 300 s")
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=300) == 0
    finally:
        os.close(master)
    terminal = b"".join(chunks).decode(errors="replace")
    assert "\r" in terminal
    assert "600/600" in terminal
    assert "Traceback" not in terminal


def test_piped_output_gets_a_progress_line_every_few_thousand_steps(tmp_path):
    flags = ["--total-timesteps", "10000", "--learning-starts", "9500", "--eval-freq", "0"]
    ran = run_script(TRAIN, *TINY, *flags, "--run-dir", tmp_path / "run")
    assert_clean_success(ran)
    assert_no_progress_bar(ran.stderr)
    lines = ran.stderr.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["step", "5,000/10,000"],
        ["step", "10,000/10,000"],
    ]
    assert all(" SPS  epsilon " in line and " ETA " in line for line in lines)
