"""Training-state snapshots: everything a run needs to continue, apart from the policy files.

A snapshot is the folder ``RUN_DIR/state/``: ``tensors.safetensors`` (networks with their norm
buffers, optimizer state, replay contents, torch random states) and ``state.json`` (counters,
evaluations, numpy random states, the env's state at an episode boundary). It is written to a
temporary sibling and renamed into place, so a crash mid-write leaves the previous snapshot
whole. Nothing is pickled.

With one env, snapshots are taken at the first episode boundary after each interval: the env
is then about to reset, so its whole state is its random generator, and a resumed run repeats
the original step for step. With several envs (or at the end of a run) the envs are not all
at a boundary; a run resumed from such a snapshot starts fresh episodes instead.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from agents.checkpoint import write_json
from qnorm import QnormError

SNAPSHOT_DIR = "state"
FORMAT_VERSION = 1
TENSORS_FILE = "tensors.safetensors"
STATE_FILE = "state.json"


def snapshot_dir(run_dir: Path) -> Path:
    """Where a run keeps its training-state snapshot."""
    return Path(run_dir) / SNAPSHOT_DIR


def _old(run_dir: Path) -> Path:
    return Path(run_dir) / f".{SNAPSHOT_DIR}.old"


def _recovered(run_dir: Path) -> Path:
    """The snapshot folder; a crash between the two renames of a write left it at .old."""
    final, old = snapshot_dir(run_dir), _old(run_dir)
    if not final.exists() and (old / STATE_FILE).is_file():
        old.rename(final)
    return final


def write_snapshot(run_dir: Path, tensors: dict[str, torch.Tensor], state: dict) -> Path:
    """Write ``tensors`` and ``state`` as the run's snapshot, replacing the old one atomically."""
    final = _recovered(run_dir)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{SNAPSHOT_DIR}.", dir=run_dir))
    except OSError as exc:
        raise QnormError(f"cannot write a snapshot in {run_dir}: {exc.strerror or exc}") from None
    try:
        cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        save_file(cpu, tmp / TENSORS_FILE, metadata={"format": "qnorm-state"})
        write_json(tmp / STATE_FILE, {"format_version": FORMAT_VERSION, **state})
        old = _old(run_dir)
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:  # a full disk, say: the previous snapshot is left as it was
        shutil.rmtree(tmp, ignore_errors=True)
        kept = "the previous snapshot is intact" if final.exists() else "no snapshot was kept"
        raise QnormError(
            f"cannot write the snapshot in {run_dir}: {exc.strerror or exc}; {kept}"
        ) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def read_snapshot(run_dir: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors and state of a run's snapshot; a missing or damaged one is a QnormError."""
    directory = _recovered(run_dir)
    if not (directory / STATE_FILE).is_file():
        raise QnormError(f"{run_dir} holds no training-state snapshot ({directory} is missing)")
    try:
        state = json.loads((directory / STATE_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise QnormError(f"snapshot {directory / STATE_FILE} is unreadable: {exc}") from None
    version = state.get("format_version") if isinstance(state, dict) else None
    if not isinstance(version, int) or version < 1:
        raise QnormError(f"{directory / STATE_FILE} is not a qnorm training-state snapshot")
    if version > FORMAT_VERSION:
        raise QnormError(
            f"snapshot format version {version} is newer than this qnorm reads "
            f"({FORMAT_VERSION}); upgrade qnorm"
        )
    try:
        tensors = load_file(directory / TENSORS_FILE)
    except (SafetensorError, OSError) as exc:
        raise QnormError(f"{directory / TENSORS_FILE} is missing, truncated or corrupt") from exc
    return tensors, state


def prefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``tensors`` with ``prefix.`` before each name."""
    return {f"{prefix}.{k}": v for k, v in tensors.items()}


def unprefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors whose names start with ``prefix.``, without it."""
    start = f"{prefix}."
    return {k[len(start) :]: v for k, v in tensors.items() if k.startswith(start)}


def generator_state(rng: np.random.Generator) -> dict:
    """A numpy generator's state as JSON (its bit generator's integers)."""
    return rng.bit_generator.state


def set_generator_state(rng: np.random.Generator, state: dict) -> None:
    """Put a numpy generator back into the state ``generator_state`` gave."""
    rng.bit_generator.state = state


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Every tensor of an optimizer's per-parameter state, named ``<param index>.<key>``."""
    state = optimizer.state_dict()["state"]
    return {f"{i}.{key}": value for i, entry in state.items() for key, value in entry.items()}


def load_optimizer_tensors(optimizer: torch.optim.Optimizer, tensors: dict) -> None:
    """Restore per-parameter state saved by ``optimizer_tensors`` (hyperparameters stay)."""
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        index, _, key = name.partition(".")
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict(
        {"state": state, "param_groups": optimizer.state_dict()["param_groups"]}
    )


def env_state(envs, at_boundary: bool) -> dict:
    """What restores a vector env: its sub-envs' random generators, if all are at a boundary."""
    if not at_boundary:
        return {"at_boundary": False}
    subs = envs.unwrapped.envs
    return {
        "at_boundary": True,
        "np_random": [generator_state(e.unwrapped.np_random) for e in subs],
        "games": [_game_state(e) for e in subs],
    }


def restore_env_state(envs, state: dict, seed: int) -> bool:
    """Reset ``envs``; at a boundary, arm the reset each sub-env was about to make.

    Returns whether the envs continue exactly (at a boundary) or start fresh episodes.
    """
    envs.reset(seed=seed)
    if not state.get("at_boundary"):
        return False
    vector = envs.unwrapped
    games = state.get("games", [None] * len(vector.envs))
    for sub, rng_state, game in zip(vector.envs, state["np_random"], games, strict=True):
        set_generator_state(sub.unwrapped.np_random, rng_state)
        if game is not None:
            _set_game_state(sub, game)
    # The next step() resets every sub-env from the generators above, as the original run's
    # next step did; episode statistics restart there too.
    vector._autoreset_envs[:] = True
    envs.prev_dones[:] = True
    return True


def _minatar_game(env):
    """A MinAtar env's game: it draws from its own legacy generator, not the env's np_random."""
    game = getattr(env.unwrapped, "game", None)
    return game if isinstance(getattr(game, "random", None), np.random.RandomState) else None


def _game_state(env) -> dict | None:
    """A MinAtar game's state that outlives a reset: its generator and the sticky action."""
    game = _minatar_game(env)
    if game is None:
        return None
    state = game.random.get_state(legacy=False)
    random = {**state, "state": {**state["state"], "key": state["state"]["key"].tolist()}}
    return {"random": random, "last_action": int(game.last_action)}


def _set_game_state(env, state: dict) -> None:
    game = _minatar_game(env)
    if game is None:
        raise QnormError(
            "the snapshot holds a MinAtar game's state, but this env is no MinAtar game"
        )
    random = state["random"]
    key = np.asarray(random["state"]["key"], dtype=np.uint32)
    game.random.set_state({**random, "state": {**random["state"], "key": key}})
    game.last_action = int(state["last_action"])
