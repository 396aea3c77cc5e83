"""One timed job in a fresh process: ``python -m agents.bench.worker '<json>'`` prints JSON.

A fresh process per run keeps the two libraries from sharing allocator, import or thread
state, so neither warms the other up.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

from agents.bench import minatar_speed
from agents.bench.configs import BenchConfig
from agents.bench.runners import time_qnorm, time_sb3
from agents.bench.solve import solve_qnorm, solve_sb3


def run(job: dict) -> dict:
    """Run one job described by a JSON-ready dict and return its result as one."""
    qnorm_side = job["library"] == "qnorm"
    if job["kind"] == "minatar":
        return minatar_job(job, qnorm_side)
    if job["kind"] == "solve":
        solver = solve_qnorm if qnorm_side else solve_sb3
        return asdict(solver(job["seed"], job["threads"]))
    bench = BenchConfig.from_dict(job["config"])
    runner = time_qnorm if qnorm_side else time_sb3
    timing = runner(bench, job["norm"], job["seed"], job["threads"])
    return {**asdict(timing), "sps": timing.sps}


def minatar_job(job: dict, qnorm_side: bool) -> dict:
    """Time one MinAtar Breakout run: qnorm's preset, or the reference DQN at job["reference"]."""
    args = (job["steps"], job["seed"], job["threads"])
    if qnorm_side:
        timing = minatar_speed.time_qnorm(*args)
    else:
        timing = minatar_speed.time_reference(job["reference"], *args)
    return {**asdict(timing), "sps": timing.sps, "learning_sps": timing.learning_sps}


def main(argv: list[str]) -> int:
    print(json.dumps(run(json.loads(argv[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
