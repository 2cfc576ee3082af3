"""Wall time of the README's quick start, ``bench run`` of the default grid on a fresh machine
(goal, issue 16: median under 300 s on 2 CPU cores).

    python -m bench.benchmarks.default_grid [--runs 3] [--jobs auto] [--label after]

Each run is a ``bench run`` subprocess in its own empty folder (fresh results, model cache and
MLflow store, leaderboard written there), exactly what the quick start's first command runs after
the install. Prints each run's wall time, the median and the spread (max - min), the cells' summed
seconds and CPU seconds, and the load average when the run ended (other work on the box inflates
wall time). Figures go to results/benchmarks/default_grid.json under ``--label``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.benchmarks.common import cpu_model, write_figures
from bench.core.version import code_version


def one_run(jobs: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="default-grid-") as tmp:
        env = {**os.environ, "BENCH_JOBS": jobs}
        env.pop("BENCH_CACHE_DIR", None)
        env.pop("MLFLOW_TRACKING_URI", None)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "bench", "run"], cwd=tmp, env=env, capture_output=True,
                              text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"bench run failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        records = [json.loads(line) for line in (Path(tmp) / "results" / "default.jsonl").read_text().splitlines()]
    return {"wall_s": round(wall, 1), "cells": len(records),
            "cell_seconds": round(sum(r["seconds"] for r in records), 1),
            "cell_cpu_seconds": round(sum(r.get("cpu_seconds", 0.0) for r in records), 1),
            "load_average_at_end": [round(v, 2) for v in os.getloadavg()]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--jobs", default="auto", help="bench run --jobs (default auto: one process per core)")
    ap.add_argument("--label", default="after")
    args = ap.parse_args()
    runs = []
    for i in range(args.runs):
        runs.append(one_run(args.jobs))
        print(f"run {i + 1}: {runs[-1]}", flush=True)
    walls = [r["wall_s"] for r in runs]
    summary = {"runs": runs, "median_wall_s": statistics.median(walls), "spread_s": round(max(walls) - min(walls), 1),
               "jobs": args.jobs, "cores": os.cpu_count(), "cpu": cpu_model(), "code": code_version(),
               "command": f"python -m bench.benchmarks.default_grid --runs {args.runs} --jobs {args.jobs} "
                          f"--label {args.label}"}
    print(f"median {summary['median_wall_s']} s, spread {summary['spread_s']} s over {len(runs)} runs")
    path = Path("results/benchmarks/default_grid.json")
    figures = json.loads(path.read_text()) if path.is_file() else {}
    figures = {k: v for k, v in figures.items() if k not in ("torch", "python", "machine", "threads")}
    figures[args.label] = summary
    print(f"written to {write_figures('default_grid', figures)}")


if __name__ == "__main__":
    main()
