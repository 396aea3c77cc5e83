"""Helpers for the end-to-end tests of scripts/: run each script in a fresh process, as a user."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

K = TypeVar("K")

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "scripts" / "train.py"
EVALUATE = REPO / "scripts" / "evaluate.py"
BENCHMARK = REPO / "scripts" / "benchmark.py"
PLOT = REPO / "scripts" / "plot.py"
STUDY = REPO / "scripts" / "study.py"
TUNE = REPO / "scripts" / "tune.py"

# A run that takes about a second: enough to learn a few steps and write every output.
TINY = shlex.split(
    "--total-timesteps 600 --learning-starts 100 --hidden-sizes 32 32 --eval-freq 0 "
    "--train-freq 4 --gradient-steps 1 --batch-size 16 --buffer-size 1000"
)


@dataclass
class Ran:
    """What one script process did."""

    returncode: int
    stdout: str
    stderr: str


def script_env(**extra: str) -> dict[str, str]:
    """The environment of a script process: headless SDL, and no TQDM_* overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_")}
    env.update(SDL_VIDEODRIVER="dummy", SDL_AUDIODRIVER="dummy")
    env.update(extra)
    return env


def run_argv(argv: list[str], cwd: Path = REPO, env: dict[str, str] | None = None) -> Ran:
    """Run ``argv`` in a fresh process and capture its output."""
    proc = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=script_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return Ran(proc.returncode, proc.stdout, proc.stderr)


def run_script(
    script: Path | str, *args: str, cwd: Path = REPO, env: dict[str, str] | None = None
) -> Ran:
    """Run ``script`` with this interpreter in a fresh process, as a user would."""
    return run_argv([sys.executable, script, *args], cwd, env)


def signalled_run(
    script: Path | str,
    *args: str,
    signals: tuple[int, ...],
    when: str,
    cwd: Path = REPO,
    meanwhile=None,
) -> Ran:
    """Run ``script``, send ``signals`` once its stderr shows a line starting with ``when``.

    ``meanwhile()``, if given, runs after that line and before the signals are sent.
    """
    proc = subprocess.Popen(
        [sys.executable, str(script), *map(str, args)],
        cwd=cwd,
        env=script_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    for line in proc.stderr:  # piped: training prints a progress line every 5,000 steps
        lines.append(line)
        if line.startswith(when):
            break
    if meanwhile is not None:
        meanwhile()
    for signum in signals:
        proc.send_signal(signum)
    stdout, rest = proc.communicate(timeout=120)
    return Ran(proc.returncode, stdout, "".join(lines) + rest)


def run_scripts(jobs: dict[K, tuple[tuple, dict]]) -> dict[K, Ran]:
    """``run_script(*args, **kwargs)`` for each ``key: (args, kwargs)``, two processes at once.

    The processes are independent and each uses one torch thread, so two at a time keeps
    both cores of a small CI machine busy without oversubscribing it.
    """
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {key: pool.submit(run_script, *a, **kw) for key, (a, kw) in jobs.items()}
        return {key: future.result() for key, future in futures.items()}


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path below ``root``: file bytes, or None for a directory."""
    return {
        str(p.relative_to(root)): None if p.is_dir() else p.read_bytes()
        for p in sorted(root.rglob("*"))
    }


def assert_clean_success(ran: Ran) -> None:
    """Exit status 0 and no traceback anywhere."""
    assert ran.returncode == 0, f"stdout:\n{ran.stdout}\nstderr:\n{ran.stderr}"
    assert "Traceback" not in ran.stdout
    assert "Traceback" not in ran.stderr


def assert_one_error_line(ran: Ran) -> str:
    """Exit status 2 and stderr exactly one ``error: ...`` line; returns that line."""
    assert ran.returncode == 2, f"stdout:\n{ran.stdout}\nstderr:\n{ran.stderr}"
    assert "Traceback" not in ran.stderr
    lines = ran.stderr.splitlines()
    assert len(lines) == 1, ran.stderr
    assert lines[0].startswith("error: "), ran.stderr
    assert len(lines[0]) > len("error: ") + 10, ran.stderr
    return lines[0]
