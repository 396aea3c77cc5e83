"""Fixtures for the end-to-end tests of scripts/."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The helpers live beside this file; make them importable under any pytest import mode.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from script_helpers import TINY, TRAIN, assert_clean_success, run_script


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """One tiny BatchNorm run, shared by every test that only reads its outputs."""
    run_dir = tmp_path_factory.mktemp("shared") / "run"
    ran = run_script(TRAIN, *TINY, "--norm", "batchnorm", "--seed", "3", "--run-dir", run_dir)
    assert_clean_success(ran)
    assert (run_dir / "checkpoints" / "final" / "model.safetensors").is_file()
    return run_dir
