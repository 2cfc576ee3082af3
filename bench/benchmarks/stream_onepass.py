"""Stream-attack cells one-pass vs two-pass: the runner scoring the attack's own stream (PGD-Skip,
RMC paper Section 5.2; FPA / GMSA, Chen et al. ICLR 2022) against replaying it, same records.

    python -m bench.benchmarks.stream_onepass [--limit 30] [--threads 1]

Runs one small digits grid (RMC; pgd-skip, pgd-skip-delayed, fpa, gmsa-avg) twice on a warm cache
(model and D' built first, untimed): one-pass (the default) and two-pass (``AttackResult.stream_for``
disabled). Writes per-cell seconds, the ratio and whether every record matched to
results/benchmarks/stream_onepass.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

from bench.benchmarks.common import write_figures
from bench.core.contracts import AttackResult
from bench.run.runner import Runner, RunOptions
from bench.spec import grid
from bench.track.results import MEASUREMENT_FIELDS

GRID = """
name = "stream-onepass"
dataset = "digits"
arch = "small-cnn"
limit = {limit}
seed = 0
[train.standard]
[runtime.rmc]
[[attacks]]
name = "pgd-skip"
threat = "adaptive"
eps = 0.1
[[attacks]]
name = "pgd-skip-delayed"
threat = "adaptive"
eps = 0.1
params = {{ q = 10 }}
[[attacks]]
name = "fpa"
threat = "adaptive"
eps = 0.1
params = {{ rounds = 1, steps = 5 }}
[[attacks]]
name = "gmsa-avg"
threat = "adaptive"
eps = 0.1
params = {{ rounds = 1, steps = 5 }}
"""
TIMING = MEASUREMENT_FIELDS


def _run(spec: grid.GridSpec, cache: Path, out: Path, two_pass: bool) -> tuple[dict[str, dict], float]:
    opts = RunOptions(cache_dir=cache, results_dir=out, tracking=False, progress=False, log_samples=False)
    start = time.perf_counter()
    if two_pass:
        with mock.patch.object(AttackResult, "stream_for", lambda self, n, seed: None):
            Runner(spec, opts).run()
    else:
        Runner(spec, opts).run()
    wall = time.perf_counter() - start
    return dict(Runner(spec, opts).store.records), wall


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=30)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "stream-onepass.toml").write_text(GRID.format(limit=args.limit))
        spec = grid.load(str(tmp / "stream-onepass.toml"))
        warm = Runner(spec, RunOptions(cache_dir=tmp / "cache", results_dir=tmp / "warm", tracking=False,
                                       progress=False))
        warm.setup()
        cell = warm.cells[0]
        model, key = warm.model(cell.arch, cell.train_defense, cell.train_params, cell.seed)
        warm.runtime(cell, model, key)  # D' into the cache
        one, one_wall = _run(spec, tmp / "cache", tmp / "one", two_pass=False)
        two, two_wall = _run(spec, tmp / "cache", tmp / "two", two_pass=True)
    same = one.keys() == two.keys() and all(
        {k: v for k, v in one[c].items() if k not in TIMING} == {k: v for k, v in two[c].items() if k not in TIMING}
        for c in one)
    cells = {one[c]["attack"]: {"one_pass_s": one[c]["seconds"], "two_pass_s": two[c]["seconds"],
                                "ratio": two[c]["seconds"] / one[c]["seconds"]} for c in one}
    fig = {"limit": args.limit, "threads": torch.get_num_threads(), "records_equal": same,
           "one_pass_wall_s": one_wall, "two_pass_wall_s": two_wall, "cells": cells,
           "command": "python -m bench.benchmarks.stream_onepass " + " ".join(
               argv if argv is not None else __import__("sys").argv[1:]),
           "note": "each run includes the clean stream of the first cell (the same in both)"}
    for name, c in cells.items():
        print(f"{name}: one-pass {c['one_pass_s']:.1f} s, two-pass {c['two_pass_s']:.1f} s ({c['ratio']:.2f}x)")
    print(f"records equal: {same}; wall {one_wall:.1f} s vs {two_wall:.1f} s")
    print(f"written to {write_figures('stream_onepass', fig)}")
    return fig


if __name__ == "__main__":
    main()
