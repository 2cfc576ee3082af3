"""Wall time of a second ``bench run`` of a finished grid against the first (goal: under 5%).

    python -m bench.benchmarks.rerun [--limit 100] [--epochs 5] [--no-tracking]

Both runs are `bench run` subprocesses (interpreter start-up and imports included) on a small digits
grid (8 cells, fresh results, cache and MLflow store in a temporary folder). Figures go to
results/benchmarks/rerun.json.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.benchmarks.common import write_figures

GRID = """
name = "rerun"
dataset = "digits"
arch = "small-cnn"
limit = {limit}
seed = 0
[train.standard]
epochs = {epochs}
[runtime.none]
[runtime.median]
[[attacks]]
name = "fgsm"
eps = 0.1
[[attacks]]
name = "pgd"
eps = [0.05, 0.1, 0.2]
params = {{ steps = 10 }}
"""


def timed_run(folder: Path, tracking: bool) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "bench", "run", "--grid", str(folder / "rerun.toml"), "--cache-dir",
           str(folder / "cache"), "--results-dir", str(folder / "results")]
    cmd += ["--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}"] if tracking else ["--no-tracking"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"bench run failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return seconds, proc.stdout.strip().splitlines()[0]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--no-tracking", action="store_true")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "rerun.toml").write_text(GRID.format(limit=args.limit, epochs=args.epochs))
        first, _ = timed_run(folder, not args.no_tracking)
        second, says = timed_run(folder, not args.no_tracking)
    figures = {"cells": 8, "limit": args.limit, "epochs": args.epochs, "tracking": not args.no_tracking,
               "first_run_s": round(first, 3), "second_run_s": round(second, 3),
               "ratio": round(second / first, 4), "goal": "< 0.05", "second_run_says": says}
    path = write_figures("rerun", figures)
    print(f"first run {first:.2f}s, second run {second:.2f}s: ratio {100 * second / first:.1f}% (goal < 5%)")
    print(f"written to {path}")
    return figures


if __name__ == "__main__":
    main()
