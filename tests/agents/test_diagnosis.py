"""The diagnosis tables: judged evaluations, agreement by outcome, rows per arm, and the
norm scalars' round trip from TensorBoard events through norm_diagnostics.csv."""

from __future__ import annotations

import pytest
from torch.utils.tensorboard import SummaryWriter

from agents.study import diagnosis
from agents.study.grid import Cell
from agents.study.runner import DONE_FILE, cell_dir

CURVE = [(1000, 30.0), (2000, 300.0), (3000, 100.0), (4000, 290.0), (5000, 200.0)]


def test_evaluations_are_judged_against_the_best_so_far_once_half_the_range_is_reached():
    # CartPole's range is 23.68..475: 30 is not half of it, 300 is; 100 is below half of
    # the way to 300 (collapsed), 290 is above 90% of it (held), 200 in between.
    judged = diagnosis.judged_evaluations(CURVE, "CartPole-v1")
    assert judged == [(3000, 100.0, "collapsed"), (4000, 290.0, "held"), (5000, 200.0, "between")]


def test_agreement_is_taken_at_the_last_point_before_each_evaluation():
    cell = Cell("CartPole-v1", "batchnorm", 0)
    series = {cell: {diagnosis.AGREEMENT: [(0, 1.0), (2500, 0.6), (3500, 0.95), (4500, 0.8)]}}
    pooled = diagnosis.agreement_by_outcome({cell: CURVE}, series)
    assert pooled == {"collapsed": [0.6], "held": [0.95], "between": [0.8]}


def fake_study():
    curves, series = {}, {}
    finals = {"batchnorm": [100.0, 480.0, 120.0], "bn_lr_quarter": [490.0, 500.0, 476.0]}
    for variant, values in finals.items():
        for seed, final in enumerate(values):
            cell = Cell("CartPole-v1", variant, seed)
            curves[cell] = [(1000, 300.0), (2000, 500.0), (4000, final)]
            series[cell] = {
                diagnosis.AGREEMENT: [(1000, 1.0), (3500, 0.5 if final < 400 else 0.9)],
                diagnosis.FIRST_WEIGHT: [(1000, 2.0), (4000, 3.0)],
            }
    return curves, series


def test_each_arm_row_says_whether_its_final_policies_hold():
    curves, series = fake_study()
    text = diagnosis.diagnosis_markdown(curves, series, ["batchnorm", "bn_lr_quarter"], reps=50)
    rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| b")}
    assert rows["| batchnorm"].startswith("| batchnorm | 3 | 233.3 [")
    assert "| reference | 1/3 | 266.7 | 0.633 | 1.50x |" in rows["| batchnorm"]
    assert "| +255.3 [" in rows["| bn_lr_quarter"]
    assert "| 3/3 | 11.3 | 0.900 | 1.50x |" in rows["| bn_lr_quarter"]
    # two collapsed finals at agreement 0.5; six held second evaluations at 1.0, four held
    # finals at 0.9
    assert "collapsed 2 evaluations: 0.500; held 10 evaluations: 0.960" in text


def test_norm_scalars_round_trip_from_events_through_the_csv(tmp_path):
    cell = Cell("CartPole-v1", "batchnorm", 0)
    run_dir = cell_dir(tmp_path / "study", cell)
    writer = SummaryWriter(str(run_dir))
    for step, value in [(100, 1.0), (200, 0.75)]:
        writer.add_scalar(diagnosis.AGREEMENT, value, step)
        writer.add_scalar("charts/SPS", 5.0, step)  # not a norm scalar: left out
    writer.close()
    (run_dir / DONE_FILE).write_text("{}")
    series = diagnosis.collect(tmp_path / "study", [cell], {})
    assert series == {cell: {diagnosis.AGREEMENT: [(100, 1.0), (200, 0.75)]}}
    diagnosis.write_csv(tmp_path / "norm.csv", series)
    assert diagnosis.read_csv(tmp_path / "norm.csv") == series
    assert diagnosis.read_csv(tmp_path / "absent.csv") == {}


@pytest.mark.parametrize(("step", "expected"), [(50, None), (100, 1.0), (250, 0.75)])
def test_value_at(step, expected):
    assert diagnosis.value_at([(100, 1.0), (200, 0.75)], step) == expected
