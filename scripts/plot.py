"""Render learning curves from run directories' TensorBoard logs to a PNG.

python scripts/plot.py runs/CartPole-v1__* --tag eval/mean_return --out curves.png
"""

from __future__ import annotations

import sys

from agents.cli import ArgumentParser, run_main
from agents.plotting import plot_runs


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dirs", nargs="+", help="run directories holding TensorBoard event files")
    p.add_argument("--tag", default="eval/mean_return", help="scalar tag to plot")
    p.add_argument("--out", default="curves.png", help="PNG file to write")
    p.add_argument("--title", default="", help="figure title (default: the tag)")
    args = p.parse_args(argv)
    print(f"wrote {plot_runs(args.run_dirs, args.tag, args.out, args.title)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
