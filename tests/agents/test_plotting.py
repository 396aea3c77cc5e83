"""Reading a run's scalars back from its TensorBoard event files."""

import logging

from torch.utils.tensorboard import SummaryWriter

from agents.plotting import read_scalars


def write_points(run_dir, steps, value, purge_step=None):
    writer = SummaryWriter(str(run_dir), purge_step=purge_step)
    for step in steps:
        writer.add_scalar("charts/x", value(step), step)
    writer.close()


def test_a_resumed_runs_scalars_replace_the_first_processs_later_ones_quietly(tmp_path, caplog):
    write_points(tmp_path, range(0, 10), lambda step: float(step))  # stopped at step 9
    write_points(tmp_path, range(6, 12), lambda step: 100.0 + step, purge_step=6)  # resumed at 6
    with caplog.at_level(logging.WARNING):
        points = read_scalars(tmp_path, "charts/x")
    assert points == [(s, float(s)) for s in range(6)] + [(s, 100.0 + s) for s in range(6, 12)]
    assert not [r for r in caplog.records if r.name.startswith("tensorboard")]
    assert logging.getLogger("tensorboard").level == logging.NOTSET  # left as it was
