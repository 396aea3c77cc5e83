"""The study: statistics on known curves, aggregation outputs, resume of finished cells."""

import _thread
import csv
import math
import signal
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from agents.checkpoint import write_json
from agents.interrupts import Interrupted
from agents.snapshot import STATE_FILE, snapshot_dir
from agents.study import runner, stats
from agents.study.aggregate import aggregate, overview_table, summarize
from agents.study.grid import VARIANTS, Cell, cell_config, cells
from agents.study.runner import (
    CURVE_FILE,
    DONE_FILE,
    cell_dir,
    check_storage,
    is_done,
    read_manifest,
    read_norm,
    record,
    run_cell,
    run_local,
    run_ray,
    write_cell,
    write_manifest,
)
from agents.training import train
from qnorm import QnormError


def test_mean_interval_brackets_the_mean_and_collapses_for_constant_data():
    low, high = stats.mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    assert low < 3.0 < high and low >= 1.0 and high <= 5.0
    assert stats.mean_ci([7.0, 7.0, 7.0]) == (7.0, 7.0)
    assert stats.mean_ci([1.0, 2.0, 3.0, 4.0, 5.0]) == (low, high)  # seeded: tables rebuild


def test_difference_interval_is_exact_for_constant_groups_and_straddles_zero_for_noise():
    assert stats.difference_ci([5.0, 5.0], [2.0, 2.0, 2.0]) == (3.0, 3.0)
    low, high = stats.difference_ci([1.0, 9.0, 5.0], [4.0, 6.0, 5.0])
    assert low < 0.0 < high


def test_interquartile_mean_trims_a_quarter_from_each_end():
    assert stats.iqm(range(1, 9)) == 4.5  # mean of 3, 4, 5, 6
    assert stats.iqm([0.0, 10.0, 10.0, 10.0, 1000.0]) == 10.0
    low, high = stats.iqm_ci([0.0, 10.0, 10.0, 10.0, 1000.0])
    assert low <= 10.0 <= high < 1000.0  # one outlier run cannot drag it up


def test_probability_of_improvement_counts_wins_and_half_ties():
    assert stats.probability_of_improvement([5.0, 6.0, 7.0], [1.0, 2.0, 3.0]) == (1.0, (1.0, 1.0))
    point, (low, high) = stats.probability_of_improvement([1.0, 2.0, 4.0], [2.0, 3.0, 0.0])
    assert point == pytest.approx(5.0 / 9.0 + 0.5 / 9.0)  # 5 wins, 1 tie of 9 pairs
    assert 0.0 <= low <= point <= high <= 1.0
    # Several tasks (runs x envs): the per-task probabilities are averaged.
    two_tasks = stats.probability_of_improvement([[5.0, 0.0], [6.0, 0.0]], [[1.0, 9.0], [2.0, 8.0]])
    assert two_tasks[0] == 0.5


def test_iqm_band_holds_the_iqm_of_every_step_between_its_bounds():
    curves = np.array([[0.0, 10.0, 20.0], [2.0, 12.0, 80.0], [4.0, 14.0, 22.0], [6.0, 16.0, 24.0]])
    point, low, high = stats.iqm_band(curves)
    assert point == pytest.approx([3.0, 13.0, 23.0])  # middle two runs at each step
    assert (low <= point).all() and (point <= high).all()


def test_statistics_without_rliable_name_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "rliable", None)  # import rliable fails
    with pytest.raises(QnormError, match=r"rliable: pip install -e '\.\[stats\]'"):
        stats.mean_ci([1.0, 2.0])


def test_auc_and_steps_to_threshold_on_a_known_curve():
    steps, returns = [0, 100, 200], [0.0, 100.0, 200.0]
    assert stats.normalized_auc(steps, returns) == 100.0  # a straight line's mean height
    assert stats.steps_to_threshold(steps, returns, 150.0) == 200.0
    assert math.isinf(stats.steps_to_threshold(steps, returns, 500.0))


def fake_cell(root: Path, cell: Cell, curve: list[tuple[int, float]]) -> None:
    run_dir = cell_dir(root, cell)
    run_dir.mkdir(parents=True)
    with open(run_dir / CURVE_FILE, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "mean_return"])
        writer.writerows(curve)
    write_json(run_dir / DONE_FILE, {"env_id": cell.env_id})


def test_aggregation_of_synthetic_curves_gives_known_numbers(tmp_path):
    root, out = tmp_path / "runs", tmp_path / "results"
    grid = cells(["CartPole-v1"], ["none", "layernorm"], [0, 1, 2])
    finals = {
        ("none", 0): 100.0,
        ("none", 1): 200.0,
        ("none", 2): 300.0,
        ("layernorm", 0): 500.0,
        ("layernorm", 1): 500.0,
        ("layernorm", 2): 500.0,
    }
    for (variant, seed), final in finals.items():
        fake_cell(root, Cell("CartPole-v1", variant, seed), [(0, 0.0), (1000, final)])
    table = aggregate(root, out, grid, ["none", "layernorm"])
    none = table["CartPole-v1", "none"]
    assert none["seeds"] == 3 and none["final_mean"] == 200.0
    assert none["auc_mean"] == 100.0  # mean height of the 0->100, 0->200 and 0->300 lines
    assert none["reached"] == 0 and math.isinf(none["steps_median"])
    layer = table["CartPole-v1", "layernorm"]
    assert layer["reached"] == 3 and layer["steps_median"] == 1000.0
    rows = list(csv.DictReader((out / "runs.csv").read_text().splitlines()))
    assert len(rows) == 12 and {r["variant"] for r in rows} == {"none", "layernorm"}
    text = (out / "tables.md").read_text()
    assert "| none | 3 | 200.0 [100.0, 300.0] |" in text
    assert "1,000 (3/3 reached)" in text
    difference, (low, high) = layer["vs_none"]
    assert difference == 300.0 and (low, high) == (200.0, 400.0)  # none's mean is 100..300
    assert "| +300.0 [+200.0, +400.0] |" in text and "| baseline |" in text
    assert layer["poi"] == (1.0, (1.0, 1.0))  # each layernorm run beats each none run
    assert "| +300.0 [+200.0, +400.0] | 1.00 [1.00, 1.00] | 500.0 [500.0, 500.0] |" in text
    assert "better: layernorm; worse: no variant; not distinguishable: no variant" in text
    assert (out / "CartPole-v1.png").stat().st_size > 1000
    assert "Across envs" not in text  # one env: nothing to aggregate across


def two_env_results(root: Path) -> list[Cell]:
    """Finals at known normalized scores: CartPole (23.68 .. 475), Acrobot (-497.08 .. -100)."""
    finals = {
        ("CartPole-v1", "none"): (475.0, 23.68),  # normalized 1 and 0
        ("CartPole-v1", "layernorm"): (475.0, 475.0),
        ("Acrobot-v1", "none"): (-100.0, -100.0),
        ("Acrobot-v1", "layernorm"): (-497.08, -100.0),
    }
    for (env_id, variant), values in finals.items():
        for seed, final in enumerate(values):
            fake_cell(root, Cell(env_id, variant, seed), [(0, 0.0), (1000, final)])
    return cells(["CartPole-v1", "Acrobot-v1"], ["none", "layernorm"], [0, 1])


def test_scores_across_envs_are_normalized_by_random_and_threshold(tmp_path):
    from agents.study.aggregate import normalized_finals, read_runs_csv

    root, out = tmp_path / "runs", tmp_path / "results"
    aggregate(root, out, two_env_results(root), ["none", "layernorm"])
    scores = normalized_finals(read_runs_csv(out / "runs.csv"), ["none", "layernorm"])
    assert scores["none"] == pytest.approx(np.array([[1.0, 1.0], [0.0, 1.0]]), abs=1e-4)
    assert scores["layernorm"] == pytest.approx(np.array([[1.0, 0.0], [1.0, 1.0]]), abs=1e-4)
    text = (out / "tables.md").read_text()
    assert "### Across envs: normalized final return" in text
    assert "| none | 2 x 2 | " in text and "| baseline |" in text
    # P(layernorm beats none): 0.75 on CartPole (3 wins, 1 tie of 4), 0.25 on Acrobot.
    assert "| layernorm | 2 x 2 | 1.00 " in text and "| 0.50 [" in text
    for name in ("across_envs_aggregates.png", "across_envs_profiles.png"):
        assert (out / name).stat().st_size > 1000, name


def test_an_env_without_a_score_range_stays_out_of_the_across_env_aggregate():
    from agents.study.aggregate import normalized_finals

    curves = {
        Cell("CartPole-v1", "none", 0): [(0, 475.0)],
        Cell("MountainCar-v0", "none", 0): [(0, -110.0)],
        Cell("NoRange-v0", "none", 0): [(0, 1.0)],
    }
    assert normalized_finals(curves, ["none"])["none"] == pytest.approx(np.array([[1.0, 1.0]]))
    assert normalized_finals({Cell("CartPole-v1", "none", 0): [(0, 1.0)]}, ["none"]) == {}


def test_figures_draw_one_panel_per_norm_family_with_no_norm_in_each():
    from agents.study.figures import panels

    variants = ["none", "batchnorm", "layernorm", "batchrenorm_joint", "rmsnorm"]
    assert panels(variants) == [
        ("BatchNorm", ["none", "batchnorm", "batchrenorm_joint"]),
        ("LayerNorm, RMSNorm, GroupNorm", ["none", "layernorm", "rmsnorm"]),
    ]
    assert panels(["none"]) == [("none", ["none"])]


def test_an_env_figure_has_panels_only_for_the_variants_run_on_that_env():
    """A study part-way through (LayerNorm run on CartPole-v1, not yet on Acrobot-v1) draws
    no LayerNorm panel holding only the no-norm curve for Acrobot-v1."""
    from agents.study.figures import env_panels

    variants = ["none", "batchnorm", "layernorm"]
    curves = {
        Cell("CartPole-v1", "none", 0): [(0, 1.0)],
        Cell("CartPole-v1", "layernorm", 0): [(0, 1.0)],
        Cell("Acrobot-v1", "none", 0): [(0, -90.0)],
        Cell("Acrobot-v1", "batchnorm", 0): [(0, -95.0)],
        Cell("Acrobot-v1", "layernorm", 0): [],  # no evaluation recorded: not drawn
    }
    assert env_panels("Acrobot-v1", curves, variants) == [("BatchNorm", ["none", "batchnorm"])]
    assert env_panels("CartPole-v1", curves, variants) == [
        ("LayerNorm, RMSNorm, GroupNorm", ["none", "layernorm"])
    ]
    unevaluated = {Cell("MountainCar-v0", "none", 0): []}  # still a figure, with one panel
    assert env_panels("MountainCar-v0", unevaluated, variants) == [("no evaluations yet", [])]


def test_a_family_whose_members_all_sit_beside_their_own_arms_gets_no_panel():
    """The holding figure: BatchNorm and joint Batch Renormalization each appear beside their
    arms, so the "BatchNorm" family panel (the two of them again) is left out."""
    from agents.study.figures import panels

    variants = ["none", "batchnorm", "batchrenorm_joint", "bnt_lr_half", "brnt_lagged"]
    assert panels(variants) == [
        ("BatchNorm at its tuned settings", ["none", "batchnorm", "bnt_lr_half"]),
        (
            "joint Batch Renormalization at its tuned settings",
            ["none", "batchrenorm_joint", "brnt_lagged"],
        ),
    ]


def test_outputs_rebuilt_from_runs_csv_alone_are_byte_identical(tmp_path):
    """The committed tables and PNGs are a function of the committed runs.csv, so a fresh
    clone (no run directories) rebuilds them exactly."""
    grid = cells(["CartPole-v1"], ["none", "layernorm"], [0, 1])
    for i, cell in enumerate(grid):
        curve = [(step, 37.123456789 * (i + 1) + step / 7.0) for step in (0, 500, 1000)]
        fake_cell(tmp_path / "runs", cell, curve)
    here, fresh = tmp_path / "here", tmp_path / "fresh"
    from_run_dirs = aggregate(tmp_path / "runs", here, grid, ["none", "layernorm"])
    fresh.mkdir()
    (fresh / "runs.csv").write_bytes((here / "runs.csv").read_bytes())
    from_csv = aggregate(tmp_path / "no_runs", fresh, grid, ["none", "layernorm"])
    assert from_csv == from_run_dirs  # every statistic, not only its rounded text
    for name in ("runs.csv", "tables.md", "CartPole-v1.png"):
        assert (fresh / name).read_bytes() == (here / name).read_bytes(), name


def test_overview_marks_each_variant_against_no_norm_on_every_env():
    curves = {
        Cell("CartPole-v1", "none", 0): [(0, 100.0)],
        Cell("CartPole-v1", "none", 1): [(0, 120.0)],
        Cell("CartPole-v1", "layernorm", 0): [(0, 300.0)],
        Cell("CartPole-v1", "layernorm", 1): [(0, 310.0)],
        Cell("CartPole-v1", "none", 2): [(0, 110.0)],
        Cell("CartPole-v1", "layernorm", 2): [(0, 305.0)],
        Cell("Acrobot-v1", "none", 0): [(0, -80.0)],
        Cell("Acrobot-v1", "none", 1): [(0, -60.0)],
        Cell("Acrobot-v1", "none", 2): [(0, -70.0)],
        Cell("Acrobot-v1", "layernorm", 0): [(0, -90.0)],
        Cell("Acrobot-v1", "layernorm", 1): [(0, -50.0)],
        Cell("Acrobot-v1", "layernorm", 2): [(0, -70.0)],
        Cell("Acrobot-v1", "rmsnorm", 0): [(0, -300.0)],
        Cell("Acrobot-v1", "rmsnorm", 1): [(0, -310.0)],
        Cell("Acrobot-v1", "batchnorm", 0): [(0, -400.0)],
    }
    text = overview_table(summarize(curves), ["CartPole-v1", "Acrobot-v1"], VARIANTS)
    assert "| none | 110.0 | -70.0 |" in text
    assert "| layernorm | 305.0 (better) | -70.0 (tie) |" in text
    # Two seeds: no interval to judge it by, and fewer seeds than the others.
    assert "| rmsnorm | not run | -305.0 (untested, 2 seeds) |" in text
    assert "| batchnorm | not run | -400.0 (untested, 1 seed) |" in text
    assert "batchrenorm_joint |" not in text  # variants run on no env are left out


def test_summary_skips_unfinished_cells(tmp_path):
    assert summarize({}) == {}
    with pytest.raises(QnormError, match="unknown variant"):
        cells(["CartPole-v1"], ["no_such_variant"], [0])


def test_a_finished_cell_is_skipped_not_retrained(tmp_path):
    cell = Cell("CartPole-v1", "none", 0)
    fake_cell(tmp_path, cell, [(0, 1.0)])
    marker = (cell_dir(tmp_path, cell) / DONE_FILE).read_bytes()
    result = run_cell(str(tmp_path), {"env_id": "CartPole-v1", "variant": "none", "seed": 0}, {})
    assert result["status"] == "skipped"
    assert (cell_dir(tmp_path, cell) / DONE_FILE).read_bytes() == marker


def one_seed_spec(tmp_path, name: str, variants: list[str], **fields):
    """A one-seed CartPole study whose runs and results stay in ``tmp_path``."""
    from agents.study.study import StudySpec

    folders = {"runs_dir": str(tmp_path / "runs"), "results_dir": str(tmp_path / "results")}
    return StudySpec(
        name=name, envs=["CartPole-v1"], variants=variants, seeds=1, **folders, **fields
    )


def test_committed_results_count_as_finished_and_are_never_dropped(tmp_path):
    """A fresh machine has no run directories: runs.csv alone resumes the study."""
    from agents.study.study import run_study

    spec = one_seed_spec(tmp_path, "s", ["none"])
    spec.results_root.mkdir(parents=True)
    (spec.results_root / "runs.csv").write_text(
        "env_id,variant,seed,step,mean_return\n"
        "CartPole-v1,none,0,1000,50.0\n"
        "Acrobot-v1,layernorm,0,1000,-90.0\n"  # outside this grid: must survive
    )
    said = []
    table = run_study(spec, report=said.append)
    assert "1 cells, 1 already finished, 0 to run" in said
    assert table["CartPole-v1", "none"]["final_mean"] == 50.0
    rows = (spec.results_root / "runs.csv").read_text()
    assert "Acrobot-v1,layernorm,0,1000,-90.0000" in rows
    assert "| layernorm | 1 |" in (spec.results_root / "tables.md").read_text()


def test_a_study_runs_every_env_and_variant_on_one_seed_before_the_next(tmp_path, monkeypatch):
    """A long study stopped partway (MinAtar: hours per cell) compares every variant."""
    from agents.study import runner
    from agents.study.study import run_study

    spec = one_seed_spec(tmp_path, "s", ["none", "layernorm"])
    spec.envs, spec.seeds = ["CartPole-v1", "Acrobot-v1"], 2
    spec.results_root.mkdir(parents=True)
    (spec.results_root / "runs.csv").write_text(
        "env_id,variant,seed,step,mean_return\nCartPole-v1,none,0,1000,50.0\n"
    )
    handed = []
    monkeypatch.setattr(runner, "run_local", lambda root, todo, *rest: handed.extend(todo))
    run_study(spec, report=lambda _: None)
    assert [(c.env_id, c.variant, c.seed) for c in handed] == [
        ("CartPole-v1", "layernorm", 0),
        ("Acrobot-v1", "none", 0),
        ("Acrobot-v1", "layernorm", 0),
        ("CartPole-v1", "none", 1),
        ("CartPole-v1", "layernorm", 1),
        ("Acrobot-v1", "none", 1),
        ("Acrobot-v1", "layernorm", 1),
    ]


def test_a_rerun_replaces_a_cells_curve_only_once_its_new_run_finishes(tmp_path, monkeypatch):
    """Asked again (a new tuned preset), a finished cell trains anew; interrupted, the old
    curve stays in runs.csv, and a later run without the flag finishes the rerun."""
    from agents.study import reruns, runner
    from agents.study.study import run_study

    spec = one_seed_spec(tmp_path, "s", ["none"])
    cell = Cell("CartPole-v1", "none", 0)
    old_dir = cell_dir(spec.runs_root, cell)
    runner.write_cell(old_dir, asdict(cell), [(1000, 50.0)], 1000, None)
    run_study(spec, report=lambda _: None, train=False)  # runs.csv holds the old curve

    def interrupted(root, todo, *rest):
        assert todo == [cell]
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_local", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_study(spec, report=lambda _: None, rerun=True)
    assert "CartPole-v1,none,0,1000,50.0000" in (spec.results_root / "runs.csv").read_text()
    assert reruns.pending(spec.results_root) == [cell]
    (kept,) = (spec.runs_root / "replaced").iterdir()
    assert (kept / "curve.csv").read_text() == "step,mean_return\n1000,50.0\n"

    handed = []

    def trains(root, todo, overrides, workers, report, storage, replace):
        handed.append((list(todo), set(replace)))
        for c in todo:
            runner.write_cell(cell_dir(root, c), asdict(c), [(1000, 80.0)], 1000, None)
            report({**asdict(c), "status": "trained", "curve": None})

    monkeypatch.setattr(runner, "run_local", trains)
    table = run_study(spec, report=lambda _: None)  # no flag: the listed cell still runs
    assert handed == [([cell], {cell})]  # anew, also where a worker's disk still has it
    assert table["CartPole-v1", "none"]["final_mean"] == 80.0
    assert "50.0000" not in (spec.results_root / "runs.csv").read_text()
    assert reruns.pending(spec.results_root) == []
    assert not (spec.results_root / reruns.PENDING_FILE).exists()
    said = []
    run_study(spec, report=said.append)  # finished: nothing runs again
    assert "1 cells, 1 already finished, 0 to run" in said and handed[1] == ([], set())


def test_a_rerun_trains_anew_a_cell_finished_on_a_workers_own_disk(tmp_path):
    """On a cluster without a shared disk the driver cannot set a worker's old run aside:
    the worker does, and trains the cell again instead of sending the old curve back."""
    cell = {"env_id": "CartPole-v1", "variant": "none", "seed": 0}
    worker = tmp_path / "worker"
    write_cell(cell_dir(worker, Cell(**cell)), cell, [(1000, 50.0)], 1000, None)
    assert run_cell(str(worker), cell, TINY_CELL)["curve"] == [(1000, 50.0)]  # read back
    result = run_cell(str(worker), cell, TINY_CELL, replace=True)
    assert result["status"] == "trained" and result["curve"] != [(1000, 50.0)]
    (kept,) = (worker / "replaced").iterdir()
    assert (kept / "curve.csv").read_text() == "step,mean_return\n1000,50.0\n"


def test_a_listed_cell_whose_new_run_finished_is_struck_off(tmp_path):
    """A driver stopped between recording a rerun's result and striking it off."""
    from agents.study import reruns

    cell = Cell("CartPole-v1", "none", 0)
    runs, results = tmp_path / "runs", tmp_path / "results"
    reruns.ask(runs, results, [cell])
    assert reruns.still_pending(runs, results) == {cell}
    write_cell(cell_dir(runs, cell), asdict(cell), [(1000, 80.0)], 1000, None)
    assert reruns.still_pending(runs, results) == frozenset()
    assert not (results / reruns.PENDING_FILE).exists()


def test_a_study_runs_the_seeds_from_its_first_seed(tmp_path):
    from agents.study.study import run_study

    spec = one_seed_spec(tmp_path, "s", ["none"], first_seed=7000)
    spec.seeds = 2
    spec.results_root.mkdir(parents=True)
    (spec.results_root / "runs.csv").write_text(
        "env_id,variant,seed,step,mean_return\n"
        "CartPole-v1,none,7000,1000,50.0\n"
        "CartPole-v1,none,7001,1000,70.0\n"
    )
    said = []
    table = run_study(spec, report=said.append)
    assert "2 cells, 2 already finished, 0 to run" in said  # seeds 0 and 1 would not be
    assert table["CartPole-v1", "none"]["final_mean"] == 60.0


def test_an_env_without_a_solved_threshold_is_tabulated_without_one(tmp_path):
    pytest.importorskip("minatar", reason="needs the minatar extra: pip install -e '.[minatar]'")
    env_id = "MinAtar/Breakout-v1"  # registered with no reward threshold
    root, out = tmp_path / "runs", tmp_path / "results"
    fake_cell(root, Cell(env_id, "none", 0), [(0, 0.5), (25_000, 6.0)])
    table = aggregate(root, out, cells([env_id], ["none"], [0]), ["none"])
    assert table[env_id, "none"]["threshold"] is None
    text = (out / "tables.md").read_text()
    assert f"### {env_id} (no registered threshold)" in text
    assert "| none | 1 | 6.0 [6.0, 6.0] |" in text and "| n/a |" in text
    assert (out / "MinAtar_Breakout-v1.png").is_file()
    # MinAtar Breakout has a published level to compare with; CartPole has none.
    assert "Reference: MinAtar reference DQN scores about 6 +- 2 after 500,000 steps." in text


def test_envs_without_a_reference_point_get_no_reference_line(tmp_path):
    root, out = tmp_path / "runs", tmp_path / "results"
    fake_cell(root, Cell("CartPole-v1", "none", 0), [(0, 10.0), (1000, 20.0)])
    aggregate(root, out, cells(["CartPole-v1"], ["none"], [0]), ["none"])
    assert "Reference:" not in (out / "tables.md").read_text()


@pytest.mark.parametrize("seeds", [1, 2])
def test_fewer_than_three_seeds_are_never_called_better_or_worse(tmp_path, seeds):
    root, out = tmp_path / "runs", tmp_path / "results"
    for seed in range(seeds):  # two seeds 70 apart on every draw: still no verdict
        fake_cell(root, Cell("CartPole-v1", "none", seed), [(0, 10.0), (1000, 20.0 + seed)])
        fake_cell(root, Cell("CartPole-v1", "layernorm", seed), [(0, 10.0), (1000, 90.0 + seed)])
    grid = cells(["CartPole-v1"], ["none", "layernorm"], list(range(seeds)))
    table = aggregate(root, out, grid, ["none", "layernorm"])
    assert table["CartPole-v1", "layernorm"]["vs_none"] == (70.0, None)
    text = (out / "tables.md").read_text()
    assert "| +70.0 (too few seeds for an interval) |" in text
    assert "better: no variant;" in text and "Too few seeds to tell: layernorm." in text
    assert "(untested)" in overview_table(table, ["CartPole-v1"], ["none", "layernorm"])


TINY_CELL = {
    "run.total_timesteps": 3000,
    "dqn.learning_starts": 300,
    "run.eval_freq": 1000,
    "run.eval_episodes": 2,
    "run.state_freq": 500,
    "network.hidden_sizes": [16],
}


def curve_of(root: Path, cell: Cell) -> list[list[str]]:
    return list(csv.reader((cell_dir(root, cell) / CURVE_FILE).open()))


def test_an_interrupted_cell_resumes_from_its_snapshot(tmp_path):
    cell = {"env_id": "CartPole-v1", "variant": "none", "seed": 0}
    alone, stopped = tmp_path / "alone", tmp_path / "stopped"
    assert run_cell(str(alone), cell, TINY_CELL)["status"] == "trained"
    # An attempt that ended early (a killed worker, a Ctrl-C) left its snapshot at step 1,000.
    config = cell_config(Cell(**cell), str(cell_dir(stopped, Cell(**cell))), TINY_CELL)
    train(config, should_stop=lambda step, _: step >= 1000)
    result = run_cell(str(stopped), cell, TINY_CELL)
    assert result["status"] == "resumed"
    # The same evaluation steps, and the one before the stop is the uninterrupted run's (after
    # it, fresh episodes: a stop mid-episode is not at a boundary, so not bit for bit).
    resumed, expected = curve_of(stopped, Cell(**cell)), curve_of(alone, Cell(**cell))
    assert [row[0] for row in resumed] == [row[0] for row in expected]
    assert resumed[1] == expected[1] == ["1000", resumed[1][1]]


def test_an_interrupted_study_starts_no_cell_after_the_running_ones(tmp_path):
    """Ctrl-C in the driver: the cell running then ends, and none of those waiting starts,
    not even the ones the pool had already handed to its worker."""
    todo = [Cell("CartPole-v1", "none", seed) for seed in range(6)]

    def interrupt(result: dict) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_local(tmp_path, todo, TINY_CELL, workers=1, report=interrupt)
    assert is_done(tmp_path, todo[0])
    # cell 1 may have started as cell 0's result went back; cells 2 and 3 sat in the
    # worker's queue, cells 4 and 5 in the driver's
    started = [cell.seed for cell in todo if cell_dir(tmp_path, cell).exists()]
    assert started in ([0], [0, 1]), started


def test_a_cell_stopped_by_a_signal_keeps_the_queued_cells_from_starting(tmp_path, monkeypatch):
    """A worker's cell stopped by SIGTERM (say): the worker sets the study's shared flag, and
    a cell it takes from the queue after that does not start."""
    flag = threading.Event()
    monkeypatch.setattr(runner, "_queue_stopped", None)
    runner._share_queue_stopped(flag)

    def stopped_by_a_signal(config, **_):
        raise Interrupted(signal.SIGTERM, clean=True)

    monkeypatch.setattr(runner, "train", stopped_by_a_signal)
    first, queued = ({"env_id": "CartPole-v1", "variant": "none", "seed": s} for s in (0, 1))
    with pytest.raises(Interrupted):
        run_cell(str(tmp_path), first, TINY_CELL)
    assert flag.is_set()
    result = run_cell(str(tmp_path), queued, TINY_CELL)
    assert result["status"] == "not started" and result["curve"] is None
    assert not cell_dir(tmp_path, Cell(**queued)).exists()
    record(tmp_path, result)  # the driver records nothing for it
    assert not is_done(tmp_path, Cell(**queued))


def test_an_interrupted_cell_of_other_settings_starts_again(tmp_path):
    cell = {"env_id": "CartPole-v1", "variant": "none", "seed": 0}
    config = cell_config(Cell(**cell), str(cell_dir(tmp_path, Cell(**cell))), TINY_CELL)
    train(config, should_stop=lambda step, _: step >= 1000)
    changed = {**TINY_CELL, "run.eval_freq": 1500}
    assert run_cell(str(tmp_path), cell, changed)["status"] == "trained"
    steps = [int(row[0]) for row in curve_of(tmp_path, Cell(**cell))[1:]]
    assert steps == [1500, 3000]


def test_results_travel_back_with_their_tasks_to_the_drivers_folder(tmp_path):
    cell = {"env_id": "CartPole-v1", "variant": "none", "seed": 0}
    worker, driver = tmp_path / "worker", tmp_path / "driver"  # two disks, as on a cluster
    result = run_cell(str(worker), cell, TINY_CELL)  # norm diagnostics after 1,000 updates
    assert [step for step, _ in result["curve"]] == [1000, 2000, 3000]
    record(driver, result)
    assert curve_of(driver, Cell(**cell)) == curve_of(worker, Cell(**cell))
    assert not (cell_dir(driver, Cell(**cell)) / "checkpoints").exists()
    # the norm diagnostics travel too: the driver has them without any event file
    assert "norm/weight_norm/layers.linear1" in result["norm"]
    assert read_norm(driver, Cell(**cell)) == result["norm"]
    assert not list(cell_dir(driver, Cell(**cell)).glob("events.out.tfevents.*"))
    skipped = run_cell(str(worker), cell, {})  # finished there: read back, not retrained
    assert skipped["status"] == "skipped" and skipped["curve"] == result["curve"]
    assert skipped["norm"] == result["norm"]


def test_run_directories_are_copied_to_the_storage_url(tmp_path):
    cell = {"env_id": "CartPole-v1", "variant": "none", "seed": 0}
    storage = f"file://{tmp_path / 'bucket'}"
    run_cell(str(tmp_path / "worker"), cell, {**TINY_CELL, "run.total_timesteps": 1000}, storage)
    copy = tmp_path / "bucket" / Cell(**cell).name
    assert (copy / "checkpoints" / "final" / "model.safetensors").is_file()
    assert (copy / CURVE_FILE).read_text() == (
        cell_dir(tmp_path / "worker", Cell(**cell)) / CURVE_FILE
    ).read_text()
    with pytest.raises(QnormError, match="cannot use storage"):
        check_storage("nosuchprotocol://bucket/x")


def test_a_ray_cluster_whose_workers_have_their_own_disk_delivers_every_result(
    tmp_path, monkeypatch
):
    ray = pytest.importorskip("ray")
    from agents.study.study import StudySpec, run_study

    driver, elsewhere = tmp_path / "driver", tmp_path / "worker_dir"
    driver.mkdir()
    elsewhere.mkdir()
    (elsewhere / "README").write_text("the workers' own working directory\n")
    monkeypatch.chdir(driver)  # the runs folder is relative: each side resolves its own
    ray.init(num_cpus=2, runtime_env={"working_dir": str(elsewhere)}, include_dashboard=False)
    try:
        spec = StudySpec(
            name="tiny",
            envs=["CartPole-v1"],
            variants=["none", "layernorm"],
            seeds=1,
            overrides={**TINY_CELL, "run.total_timesteps": 1000},
            ray_address="local",
            results_dir=str(tmp_path / "results"),
            storage=f"file://{tmp_path / 'bucket'}",
        )
        run_study(spec, report=lambda line: None)
    finally:
        ray.shutdown()
    rows = list(csv.DictReader((tmp_path / "results" / "tiny" / "runs.csv").open()))
    assert sorted((r["variant"], r["step"]) for r in rows) == [
        ("layernorm", "1000"),
        ("none", "1000"),
    ]
    for variant in ("none", "layernorm"):
        here = cell_dir(driver / spec.runs_root, Cell("CartPole-v1", variant, 0))
        assert (here / CURVE_FILE).is_file()  # written by the driver from the returned result
        assert not (here / "checkpoints").exists()  # the run itself happened elsewhere
        name = Cell("CartPole-v1", variant, 0).name
        assert (tmp_path / "bucket" / "tiny" / name / "checkpoints" / "final").is_dir()


def test_an_interrupted_ray_study_saves_its_running_cell_and_starts_no_other(tmp_path):
    """Ctrl-C in the driver of a Ray study: the queued tasks never start, the running one stops
    cleanly (final checkpoint and snapshot saved), and the driver waits for it before it goes."""
    ray = pytest.importorskip("ray")
    todo = [Cell("CartPole-v1", "none", seed) for seed in range(3)]
    first = snapshot_dir(cell_dir(tmp_path, todo[0])) / STATE_FILE

    def ctrl_c_once_the_first_cell_trains() -> None:
        while not first.exists():
            time.sleep(0.05)
        _thread.interrupt_main()

    # Ctrl-C as a driver sees it with Python's own handler (a library loaded by an earlier
    # test may have set SIGINT to its default action, which interrupt_main skips)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    ray.init(num_cpus=1, include_dashboard=False)
    try:
        threading.Thread(target=ctrl_c_once_the_first_cell_trains, daemon=True).start()
        long_cells = {**TINY_CELL, "run.total_timesteps": 200_000}
        with pytest.raises(KeyboardInterrupt):
            run_ray(tmp_path, todo, long_cells, "local", report=lambda result: None)
        # before the worker could be shut down: the cell had saved its way-out files
        run_dir = cell_dir(tmp_path, todo[0])
        assert (run_dir / "checkpoints" / "final" / "model.safetensors").is_file()
        assert not is_done(tmp_path, todo[0])
    finally:
        ray.shutdown()
        signal.signal(signal.SIGINT, previous)
    assert first.is_file()  # it resumes from there on the next run
    assert [c.seed for c in todo if cell_dir(tmp_path, c).exists()] == [0]


def test_tables_report_the_best_checkpoint_beside_the_final_policy(tmp_path):
    root, out = tmp_path / "runs", tmp_path / "results"
    grid = cells(["CartPole-v1"], ["none", "batchnorm"], [0, 1])
    curves = {
        ("none", 0): [(1000, 200.0), (2000, 500.0)],
        ("none", 1): [(1000, 100.0), (2000, 300.0)],
        ("batchnorm", 0): [(1000, 400.0), (2000, 20.0)],  # peaked, then collapsed
        ("batchnorm", 1): [(1000, 300.0), (2000, 10.0)],
    }
    for (variant, seed), curve in curves.items():
        fake_cell(root, Cell("CartPole-v1", variant, seed), curve)
    table = aggregate(root, out, grid, ["none", "batchnorm"])
    assert table["CartPole-v1", "batchnorm"]["best_mean"] == 350.0
    assert table["CartPole-v1", "batchnorm"]["final_mean"] == 15.0
    text = (out / "tables.md").read_text()
    assert "| final greedy return: mean [95% CI] | best checkpoint: mean |" in text
    assert "| batchnorm | 2 | 15.0 [10.0, 20.0] | 350.0 |" in text
    assert "| none | 2 | 400.0 [300.0, 500.0] | 400.0 |" in text


def test_diagnosis_arms_scale_each_envs_own_preset_value():
    cartpole = cell_config(Cell("CartPole-v1", "batchnorm", 0), "", {})
    acrobot = cell_config(Cell("Acrobot-v1", "batchnorm", 0), "", {})
    for base in (cartpole, acrobot):
        env = base.run.env_id
        lr = cell_config(Cell(env, "bn_lr_quarter", 0), "", {}).dqn
        assert lr.learning_rate == pytest.approx(base.dqn.learning_rate / 4)
        batch = cell_config(Cell(env, "bn_batch_x4", 0), "", {}).dqn.batch_size
        assert batch == 4 * base.dqn.batch_size and isinstance(batch, int)
        target = cell_config(Cell(env, "bn_target_x10", 0), "", {}).dqn
        assert target.target_update_interval == 10 * base.dqn.target_update_interval
    # a study-wide override is what an arm scales
    small = cell_config(Cell("CartPole-v1", "bn_batch_x4", 0), "", {"dqn.batch_size": 8})
    assert small.dqn.batch_size == 32


def test_a_diagnosis_study_writes_its_norm_scalars_and_diagnosis_table(tmp_path):
    from agents.study.study import run_study

    spec = one_seed_spec(
        tmp_path,
        "diagnosis",
        ["batchnorm"],
        overrides=TINY_CELL,
        workers=1,
        bootstrap_reps=20,
        diagnosis=True,
    )
    run_study(spec, report=lambda _: None)
    text = (spec.results_root / "diagnosis.md").read_text()
    assert "### CartPole-v1: does the final policy hold?" in text
    assert "| batchnorm | 1 |" in text and "| reference |" in text
    rows = list(csv.DictReader((spec.results_root / "norm_diagnostics.csv").open()))
    tags = {row["tag"] for row in rows}
    assert {"norm/greedy_agreement", "norm/weight_norm/layers.linear1"} <= tags


def test_every_minatar_protocol_variant_builds_a_network_for_minatar_grids():
    import gymnasium as gym
    import torch

    from agents.network_specs import network_spec
    from agents.study.study import MINATAR
    from qnorm import build_q_network, q_values

    space = gym.spaces.Box(0, 1, (10, 10, 4), dtype=bool)
    for variant in MINATAR["variants"]:
        config = cell_config(Cell("MinAtar/Breakout-v1", variant, 0), "", MINATAR["overrides"])
        net = build_q_network(network_spec(config, space, 3))
        names = [name for name, _ in net.layers.named_children()]
        if variant == "none_pooled":
            assert "pool1" in names and not any("norm" in name for name in names), names
        elif "pool" in variant:  # BatchNorm on the conv's maps, before or after the max-pool
            norm_first = names.index("conv_norm1") < names.index("pool1")
            assert norm_first == (variant == "batchnorm_pool_before"), names
        net.train()
        assert net(torch.zeros(4, 10, 10, 4, dtype=torch.bool)).shape == (4, 3)
        assert q_values(net, torch.zeros(10, 10, 4, dtype=torch.bool)).shape == (3,)


def test_tables_count_the_final_policies_at_or_above_the_threshold():
    from agents.study.aggregate import holding_text

    table = {
        ("CartPole-v1", "none"): {"finals": [500.0, 480.0, 100.0], "seeds": 3},
        ("CartPole-v1", "batchnorm"): {"finals": [475.0, 20.0, 474.9], "seeds": 3},
    }
    assert holding_text("CartPole-v1", table, ["none", "batchnorm", "layernorm"]) == (
        "Final policies at or above 475: none 2/3, batchnorm 1/3.\n"
    )
    assert holding_text("Acrobot-v1", table, ["none"]) == ""  # no rows for that env


def test_a_run_of_part_of_a_study_adds_to_the_grid_its_manifest_records(tmp_path):
    fair = {"name": "fair", "overrides": {"run.tuned_preset": True}, "seeds": 5, "first_seed": 0}
    fair |= {"diagnosis": False}
    write_manifest(tmp_path, {**fair, "envs": ["CartPole-v1", "Acrobot-v1"], "variants": ["none"]})
    part = {**fair, "envs": ["LunarLander-v3"], "variants": ["rmsnorm", "none"]}
    recorded = write_manifest(tmp_path, part)
    assert recorded == read_manifest(tmp_path)  # the tables follow the grid's order
    assert recorded["envs"] == ["CartPole-v1", "Acrobot-v1", "LunarLander-v3"]
    assert recorded["variants"] == ["none", "rmsnorm"]

    # Cells trained differently (here 3 seeds, not 5) make a new grid: the record is replaced.
    write_manifest(tmp_path, {**fair, "seeds": 3, "envs": ["Acrobot-v1"], "variants": ["none"]})
    assert read_manifest(tmp_path)["envs"] == ["Acrobot-v1"]
