"""agents.study.per_run: each run's numbers from a study's runs.csv."""

import pytest

from agents.study.aggregate import write_runs_csv
from agents.study.grid import Cell, cells
from agents.study.per_run import markdown_table, read_run_numbers, run_numbers
from qnorm import QnormError

CELL = Cell("CartPole-v1", "none", 0)


def test_a_runs_numbers_come_from_its_sorted_curve():
    curve = [(100, 2.0), (25, 1.0), (75, 4.0), (50, 4.0)]  # out of order on purpose
    numbers = run_numbers(CELL, curve)
    assert numbers.final == 2.0
    assert (numbers.best, numbers.best_step) == (4.0, 50)  # the first step that reached it
    assert numbers.last_mean == pytest.approx(11.0 / 4)  # fewer than eight: all of them
    # trapezoids over 25-step gaps, divided by the 75-step span
    assert numbers.auc == pytest.approx((2.5 * 25 + 4.0 * 25 + 3.0 * 25) / 75)
    assert numbers.evaluations == 4


def test_the_last_mean_covers_only_the_last_eight_evaluations():
    curve = [(step, 100.0 if step == 1 else float(step)) for step in range(1, 11)]
    assert run_numbers(CELL, curve).last_mean == pytest.approx(sum(range(3, 11)) / 8)


def test_runs_come_in_the_grids_order_and_only_the_grids(tmp_path):
    path = tmp_path / "runs.csv"
    recorded = {
        Cell("CartPole-v1", "batchnorm", 1): [(10, 3.0), (20, 5.0)],
        Cell("CartPole-v1", "none", 0): [(10, 1.0), (20, 2.0)],
        Cell("CartPole-v1", "layernorm", 0): [(10, 9.0), (20, 9.0)],  # not in the grid
    }
    write_runs_csv(path, recorded)
    grid = cells(["CartPole-v1"], ["none", "batchnorm"], [0, 1])  # two cells never ran
    rows = read_run_numbers(path, grid)
    assert [r.cell for r in rows] == [
        Cell("CartPole-v1", "none", 0),
        Cell("CartPole-v1", "batchnorm", 1),
    ]
    table = markdown_table(rows).splitlines()
    assert len(table) == 4
    assert table[3] == "| CartPole-v1 | batchnorm | 1 | 5.0 | 5.0 (20) | 4.0 | 4.0 | 2 |"


def test_no_recorded_runs_is_a_user_error(tmp_path):
    with pytest.raises(QnormError, match=r"no runs recorded in .*runs\.csv"):
        read_run_numbers(tmp_path / "runs.csv", [CELL])
