"""Run study cells in parallel (local processes or Ray), skipping cells already finished.

Every result travels back with its task: a cell's evaluation curve is in the value it returns,
and the driver writes it into its own runs folder (``record``), so a cluster whose workers do
not share the driver's disk still delivers every result. A worker's run directory (checkpoints,
TensorBoard logs) stays on its disk, or is copied to ``storage`` (any fsspec URL) when given.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path

import fsspec

from agents.checkpoint import write_json
from agents.interrupts import Interrupted
from agents.plotting import read_tagged
from agents.snapshot import STATE_FILE, snapshot_dir
from agents.study.grid import Cell, cell_config
from agents.training import train
from qnorm import QnormError

DONE_FILE = "done.json"
CURVE_FILE = "curve.csv"
NORM_FILE = "norm_scalars.json"  # the run's norm/* TensorBoard scalars, travelling with it

# In a worker of ``run_local``'s pool: the flag the driver and every worker share, set once
# the study is interrupted, so a cell already queued for a worker does not start after that.
_queue_stopped = None


def _share_queue_stopped(flag) -> None:
    """The pool's worker initializer: keep the shared stop flag."""
    global _queue_stopped
    _queue_stopped = flag


def _stop_queue() -> None:
    if _queue_stopped is not None:
        _queue_stopped.set()


def cell_dir(root: Path, cell: Cell) -> Path:
    """Where a cell's run directory lives."""
    return root / "runs" / cell.name


def is_done(root: Path, cell: Cell) -> bool:
    """Whether the cell finished (its curve and done marker are written last)."""
    return (cell_dir(root, cell) / DONE_FILE).is_file()


def set_aside(root: Path, cell: Cell) -> Path:
    """Move a finished cell's run directory to ``root/replaced/`` (kept) so it trains anew."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    aside = root / "replaced" / f"{cell.name}__{stamp}"
    aside.parent.mkdir(parents=True, exist_ok=True)
    cell_dir(root, cell).rename(aside)
    return aside


def run_cell(
    root: str, cell: dict, overrides: dict, storage: str = "", replace: bool = False
) -> dict:
    """Train one cell and write its evaluation curve; the result carries the curve.

    A cell finished in this worker's ``root`` is not trained again, its curve is read back;
    unless ``replace`` (a rerun), which sets that run aside and trains the cell anew.
    """
    cell_obj = Cell(**cell)
    if _queue_stopped is not None and _queue_stopped.is_set():
        return {**cell, "status": "not started", "curve": None}
    run_dir = cell_dir(Path(root), cell_obj)
    if replace and is_done(Path(root), cell_obj):
        set_aside(Path(root), cell_obj)
    if is_done(Path(root), cell_obj):
        steps = json.loads((run_dir / DONE_FILE).read_text()).get("steps", 0)
        curve = read_curve(Path(root), cell_obj)
        norm = read_norm(Path(root), cell_obj)
        return {**cell, "status": "skipped", "curve": curve, "steps": steps, "norm": norm}
    config = cell_config(cell_obj, str(run_dir), overrides)
    try:
        result = _continued(config, run_dir) if run_dir.exists() else None
        status = "trained" if result is None else "resumed"
        if result is None:
            result = train(config)
    except Interrupted:  # snapshot saved; no queued cell of this study starts after it
        _stop_queue()
        raise
    curve = [(int(step), float(value)) for step, value in result.evaluations]
    norm = read_tagged(run_dir, "norm/")
    write_cell(run_dir, cell, curve, result.global_step, norm)
    if storage:
        upload(run_dir, storage, cell_obj.name)
    return {**cell, "status": status, "curve": curve, "steps": result.global_step, "norm": norm}


def write_cell(
    run_dir: Path, cell: dict, curve: list[tuple[int, float]], steps: int, norm: dict | None
) -> None:
    """A finished cell's curve, its norm diagnostics (if any) and, last, its done marker."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / CURVE_FILE, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "mean_return"])
        writer.writerows(curve)
    if norm is not None:
        write_json(run_dir / NORM_FILE, norm)
    write_json(run_dir / DONE_FILE, {**cell, "steps": steps})


def read_norm(root: Path, cell: Cell) -> dict[str, list[tuple[int, float]]] | None:
    """A finished cell's ``norm/*`` scalars as its task returned them (None if not kept)."""
    path = cell_dir(root, cell) / NORM_FILE
    if not path.is_file():
        return None
    stored = json.loads(path.read_text())
    return {
        tag: [(int(step), float(value)) for step, value in points] for tag, points in stored.items()
    }


def record(root: Path, result: dict) -> None:
    """Write a returned result into the driver's runs folder (where a worker's may be another)."""
    fields = {k: result[k] for k in ("env_id", "variant", "seed")}
    cell = Cell(**fields)
    if result.get("curve") is None or is_done(root, cell):
        return  # a worker sharing this disk wrote it already
    curve = [(int(step), float(value)) for step, value in result["curve"]]
    write_cell(cell_dir(root, cell), fields, curve, result.get("steps", 0), result.get("norm"))


def check_storage(storage: str) -> None:
    """Fail before any training if ``storage`` is not a URL fsspec can write to."""
    try:
        fsspec.core.url_to_fs(storage)
    except (ImportError, ValueError) as exc:
        raise QnormError(f"cannot use storage {storage!r}: {exc}") from None


def upload(run_dir: Path, storage: str, name: str) -> str:
    """Copy a finished run directory to ``storage/name`` (replacing an older copy)."""
    fs, base = fsspec.core.url_to_fs(storage)
    target = f"{base.rstrip('/')}/{name}"
    if fs.exists(target):
        fs.rm(target, recursive=True)
    fs.makedirs(target, exist_ok=True)
    for path in sorted(run_dir.rglob("*")):
        if path.is_file():
            remote = f"{target}/{path.relative_to(run_dir).as_posix()}"
            fs.makedirs(remote.rpartition("/")[0], exist_ok=True)
            fs.put_file(str(path), remote)
    return target


def _continued(config, run_dir: Path):
    """An interrupted attempt at this cell, resumed from its snapshot; else it is removed.

    Only an attempt with this very config is resumed (the study's overrides may have changed
    since), and one whose snapshot cannot be read is started again from scratch.
    """
    try:
        recorded = json.loads((run_dir / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        recorded = None
    wanted = json.loads(json.dumps(config.to_dict()))
    if recorded == wanted and (snapshot_dir(run_dir) / STATE_FILE).is_file():
        try:
            return train(config, resume=True)
        except QnormError:
            pass  # a damaged snapshot: start the cell again
    shutil.rmtree(run_dir)
    return None


def task_args(
    root: Path, todo: list[Cell], overrides: dict, storage: str, replace: frozenset[Cell]
) -> list[tuple]:
    """``run_cell``'s arguments for each cell, as either backend sends them to a worker."""
    return [(str(root), asdict(c), overrides, storage, c in replace) for c in todo]


def run_local(
    root: Path,
    todo: list[Cell],
    overrides: dict,
    workers: int,
    report,
    storage: str = "",
    replace: frozenset[Cell] = frozenset(),
) -> None:
    """Run cells in ``workers`` fresh processes, one torch thread each (those in ``replace``
    anew, though finished).

    Interrupted (Ctrl-C in the driver, or a signal that stops a worker's cell), the driver
    cancels every cell not started yet and waits for the running ones. The pool hands a few
    cells to its workers ahead of time, beyond cancelling; a shared flag keeps those from
    starting. A cell stopped midway resumes from its snapshot on the next run.
    """
    if not todo:
        return
    context = get_context("spawn")  # fresh interpreters: no torch state copied by fork
    stopped = context.Event()
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_share_queue_stopped,
        initargs=(stopped,),
    )
    try:
        futures = [
            pool.submit(run_cell, *a) for a in task_args(root, todo, overrides, storage, replace)
        ]
        for future in futures:
            report(future.result())
    except BaseException:
        stopped.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def run_ray(
    root: Path,
    todo: list[Cell],
    overrides: dict,
    address: str,
    report,
    storage: str = "",
    replace: frozenset[Cell] = frozenset(),
) -> None:
    """Run cells as Ray tasks (one CPU each) on the cluster at ``address`` (those in
    ``replace`` anew, though finished on a worker's disk).

    Interrupted (Ctrl-C in the driver, or a task whose cell a signal stopped), the driver
    cancels every task left: a queued one never starts, a running one stops at its next step
    and saves its snapshot, as on Ctrl-C. The driver waits for those before it goes.
    """
    try:
        import ray
    except ImportError:
        raise QnormError("--ray-address needs Ray: pip install -e '.[ray]'") from None
    ray.init(address=None if address == "local" else address, ignore_reinit_error=True)
    remote = ray.remote(num_cpus=1)(run_cell)
    pending = [remote.remote(*a) for a in task_args(root, todo, overrides, storage, replace)]
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            report(ray.get(ready[0]))
    except BaseException:
        _cancel_and_wait(ray, pending)
        raise


def _cancel_and_wait(ray, tasks: list) -> None:
    """Cancel Ray tasks and wait until each has ended. A running task's cancel arrives as
    SIGINT in its worker's main thread, where training stops cleanly and saves its snapshot."""
    for task in tasks:
        ray.cancel(task)
    if tasks:
        ray.wait(tasks, num_returns=len(tasks))


def read_curve(root: Path, cell: Cell) -> list[tuple[int, float]]:
    """A finished cell's evaluation curve as (step, mean return) pairs."""
    with open(cell_dir(root, cell) / CURVE_FILE, newline="") as handle:
        return [(int(row["step"]), float(row["mean_return"])) for row in csv.DictReader(handle)]


# The fields that decide how a cell trains: runs that agree on them belong to one grid.
SAME_GRID_FIELDS = ("overrides", "seeds", "first_seed", "diagnosis")


def write_manifest(root: Path, spec: dict) -> dict:
    """Record the grid the results cover, beside them, and return it.

    A run of part of a study (``--envs LunarLander-v3`` after the other envs) adds its envs
    and variants to the grid already recorded, as its results join the ones already there;
    a run that trains cells differently replaces the record.
    """
    root.mkdir(parents=True, exist_ok=True)
    path = root / "study.json"
    previous = read_manifest(root) if path.is_file() else {}
    if all(previous.get(k) == spec.get(k) for k in SAME_GRID_FIELDS):
        for key in ("envs", "variants"):
            spec = {**spec, key: list(dict.fromkeys([*previous.get(key, []), *spec[key]]))}
    write_json(path, spec)
    return spec


def read_manifest(root: Path) -> dict:
    """The study spec written by ``write_manifest``."""
    return json.loads((root / "study.json").read_text())
