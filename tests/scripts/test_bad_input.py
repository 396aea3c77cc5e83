"""A user's mistakes: exit 2, one ``error: ...`` line, no traceback, nothing on disk touched."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from script_helpers import (
    EVALUATE,
    TINY,
    TRAIN,
    Ran,
    assert_one_error_line,
    run_script,
    run_scripts,
    script_env,
    snapshot,
)


def fake_run_dir(run_dir: Path) -> None:
    """A run directory with data in it that a new run must never overwrite."""
    final = run_dir / "checkpoints" / "final"
    final.mkdir(parents=True)
    (run_dir / "sentinel.txt").write_text("keep me\n")
    (run_dir / "config.json").write_text('{"precious": true}\n')
    (final / "model.safetensors").write_bytes(bytes(range(256)) * 8)
    (final / "config.json").write_text('{"format_version": 1}\n')


def regular_file(path: Path) -> None:
    path.write_bytes(b"a regular file, not a directory\n")


# id: (flags, what the error line must say; None for argparse's own usage errors,
#      a setup run on the work directory or None, the --run-dir relative to it)
TRAIN_CASES = {
    "unknown-env": (["--env-id", "NoSuchEnv-v0"], "NoSuchEnv-v0", None, "run"),
    "continuous-actions": (["--env-id", "Pendulum-v1"], "Discrete actions", None, "run"),
    "discrete-obs": (["--env-id", "FrozenLake-v1"], "1-D Box", None, "run"),
    "tuple-obs": (["--env-id", "Blackjack-v1"], "1-D Box", None, "run"),
    "batchnorm-batch-1": (
        ["--batch-size", "1", "--norm", "batchnorm"],
        "batch size 1",
        None,
        "run",
    ),
    "zero-steps": (["--total-timesteps", "0"], "total_timesteps", None, "run"),
    "negative-steps": (["--total-timesteps", "-5"], "total_timesteps", None, "run"),
    "zero-buffer": (["--buffer-size", "0"], "buffer_size", None, "run"),
    "existing-run-dir": ([], "already exists", lambda d: fake_run_dir(d / "run"), "run"),
    "run-dir-is-a-file": ([], "already exists", lambda d: regular_file(d / "run"), "run"),
    "below-a-file": ([], "cannot write", lambda d: regular_file(d / "blocker"), "blocker/run"),
    "bogus-norm": (["--norm", "bogus"], None, None, "run"),
    "not-an-int": (["--total-timesteps", "many"], None, None, "run"),
}


@pytest.fixture(scope="module")
def train_rejections(tmp_path_factory) -> dict[str, tuple[Path, dict, Ran]]:
    """Each case's (work dir, its snapshot before, the run): the runs go two at a time."""
    jobs, work = {}, {}
    for case, (flags, _, setup, run_dir) in TRAIN_CASES.items():
        work_dir = tmp_path_factory.mktemp(case)
        if setup is not None:
            setup(work_dir)
        work[case] = (work_dir, snapshot(work_dir))
        args = (TRAIN, *TINY, *flags, "--run-dir", work_dir / run_dir)
        # cwd is the work dir too, so a stray default runs/ would show up in its snapshot.
        jobs[case] = (args, {"cwd": work_dir})
    ran = run_scripts(jobs)
    return {case: (*work[case], ran[case]) for case in TRAIN_CASES}


@pytest.mark.parametrize("case", [c for c, v in TRAIN_CASES.items() if v[1] is not None])
def test_train_rejects(train_rejections, case):
    work_dir, before, ran = train_rejections[case]
    _, says, setup, run_dir = TRAIN_CASES[case]
    line = assert_one_error_line(ran)
    assert says in line
    assert ran.stdout == ""
    if setup is None:
        assert not (work_dir / run_dir).exists()
    assert snapshot(work_dir) == before  # no file created, changed or removed


@pytest.mark.parametrize("case", [c for c, v in TRAIN_CASES.items() if v[1] is None])
def test_train_argparse_errors(train_rejections, case):
    work_dir, before, ran = train_rejections[case]
    assert "(see train.py --help)" in assert_one_error_line(ran)  # not the whole usage
    assert ran.stdout == ""
    assert before == {}
    assert snapshot(work_dir) == {}


def test_train_missing_env_dependency(tmp_path):
    """An env whose optional package is missing is a user's mistake, not a crash."""
    site = tmp_path / "site"
    site.mkdir()
    # sitecustomize runs at interpreter start: it registers an env whose package is "missing".
    (site / "sitecustomize.py").write_text(
        "import gymnasium as gym\n\n\n"
        "def make_env(**kwargs):\n"
        "    raise gym.error.DependencyNotInstalled('fakepkg is not installed: pip install x')\n"
        "\n\n"
        "gym.register(id='QnormNeedsFakePkg-v0', entry_point=make_env)\n"
    )
    env = script_env(PYTHONPATH=str(site), PYTHONDONTWRITEBYTECODE="1")
    before = snapshot(tmp_path)
    run_dir = tmp_path / "run"
    ran = run_script(
        TRAIN, *TINY, "--env-id", "QnormNeedsFakePkg-v0", "--run-dir", run_dir,
        cwd=tmp_path, env=env,
    )  # fmt: skip
    line = assert_one_error_line(ran)
    assert "QnormNeedsFakePkg-v0" in line
    assert "fakepkg is not installed" in line
    assert not run_dir.exists()
    assert snapshot(tmp_path) == before


def test_train_preset_env_without_box2d(tmp_path):
    """Without Box2D (hidden here by a package of that name that fails to import, so the
    test runs whether or not the box2d extra is installed), LunarLander-v3 is one error."""
    site = tmp_path / "site"
    (site / "Box2D").mkdir(parents=True)
    (site / "Box2D" / "__init__.py").write_text("raise ImportError(\"No module named 'Box2D'\")\n")
    env = script_env(PYTHONPATH=str(site), PYTHONDONTWRITEBYTECODE="1")
    run_dir = tmp_path / "run"
    ran = run_script(TRAIN, *TINY, "--env-id", "LunarLander-v3", "--run-dir", run_dir, env=env)
    line = assert_one_error_line(ran)
    assert "LunarLander-v3" in line
    assert "Box2D" in line
    assert not run_dir.exists()


def copy_checkpoint(trained_run: Path, work_dir: Path) -> Path:
    """A private copy of the shared run's final checkpoint, free to damage."""
    ckpt = work_dir / "ckpt"
    shutil.copytree(trained_run / "checkpoints" / "final", ckpt)
    return ckpt


def truncated_model(trained_run: Path, work_dir: Path) -> Path:
    ckpt = copy_checkpoint(trained_run, work_dir)
    model = ckpt / "model.safetensors"
    data = model.read_bytes()
    model.write_bytes(data[: len(data) // 2])
    return ckpt


def corrupt_config(trained_run: Path, work_dir: Path) -> Path:
    ckpt = copy_checkpoint(trained_run, work_dir)
    config = ckpt / "config.json"
    config.write_text(config.read_text()[:40])
    return ckpt


def future_format(trained_run: Path, work_dir: Path) -> Path:
    ckpt = copy_checkpoint(trained_run, work_dir)
    config = ckpt / "config.json"
    data = json.loads(config.read_text())
    assert data["format_version"] == 1
    data["format_version"] = 999
    config.write_text(json.dumps(data))
    return ckpt


def edited_network(trained_run: Path, work_dir: Path, **fields) -> Path:
    ckpt = copy_checkpoint(trained_run, work_dir)
    config = ckpt / "config.json"
    data = json.loads(config.read_text())
    data["network"].update(fields)
    config.write_text(json.dumps(data))
    return ckpt


def edited_config(trained_run: Path, work_dir: Path, **fields) -> Path:
    ckpt = copy_checkpoint(trained_run, work_dir)
    config = ckpt / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), **fields}))
    return ckpt


def gigantic_network(trained_run: Path, work_dir: Path) -> Path:
    # 40 billion parameters (160 GB): refused from the header before anything is allocated.
    return edited_network(trained_run, work_dir, hidden_sizes=[200_000, 200_000])


def wider_network(trained_run: Path, work_dir: Path) -> Path:
    return edited_network(trained_run, work_dir, hidden_sizes=[64, 32])


def missing_path(trained_run: Path, work_dir: Path) -> Path:
    return work_dir / "nope"


def empty_dir(trained_run: Path, work_dir: Path) -> Path:
    (work_dir / "empty").mkdir()
    return work_dir / "empty"


# id: (what to evaluate, made in the case's work dir; extra flags; what the error line says)
EVALUATE_CASES = {
    "missing-path": (missing_path, [], "no checkpoint or run directory"),
    "empty-dir": (empty_dir, [], "holds no checkpoint"),
    "truncated-model": (truncated_model, [], "model.safetensors"),
    "corrupt-config": (corrupt_config, [], "config.json"),
    "format-999": (future_format, [], "format version 999"),
    "zero-episodes": (copy_checkpoint, ["--episodes", "0"], "episodes"),
    "gigantic-network": (gigantic_network, [], "more than the 1,000,000,000"),
    "wrong-type": (
        lambda run, work: edited_network(run, work, hidden_sizes="wide"),
        [],
        "config.json lacks a field or has a bad one",
    ),
    "unknown-key": (
        lambda run, work: edited_network(run, work, bogus=1),
        [],
        "unknown fields: bogus",
    ),
    "step-not-a-number": (
        lambda run, work: edited_config(run, work, step=None),
        [],
        "config.json lacks a field or has a bad one",
    ),
    # A checkpoint is data: an env id naming a module never gets that module imported.
    "env-id-imports-a-module": (
        lambda run, work: edited_config(run, work, env_id="os:CartPole-v1"),
        [],
        "would import module 'os'",
    ),
    "network-not-in-file": (wider_network, [], "does not fit its config's network"),
}


@pytest.fixture(scope="module")
def evaluate_rejections(trained_run, tmp_path_factory) -> dict[str, tuple[Path, dict, Ran]]:
    """Each case's (work dir, its snapshot before, the run): the runs go two at a time."""
    jobs, work = {}, {}
    for case, (prepare, flags, _) in EVALUATE_CASES.items():
        work_dir = tmp_path_factory.mktemp(case)
        path = prepare(trained_run, work_dir)
        work[case] = (work_dir, snapshot(work_dir))
        jobs[case] = ((EVALUATE, path, "--episodes", "1", *flags), {"cwd": work_dir})
    ran = run_scripts(jobs)
    return {case: (*work[case], ran[case]) for case in EVALUATE_CASES}


@pytest.mark.parametrize("case", list(EVALUATE_CASES))
def test_evaluate_rejects(evaluate_rejections, case):
    work_dir, before, ran = evaluate_rejections[case]
    line = assert_one_error_line(ran)
    assert EVALUATE_CASES[case][2] in line
    assert ran.stdout == ""
    assert snapshot(work_dir) == before  # the checkpoint files are byte-identical, none added
