"""RIDE throughput: a whole batch of per-image networks trained as one grouped convolution vs one
image at a time, same settings, one run.

    python -m bench.benchmarks.ride [--dataset digits] [--n 32] [--iterations 100] [--device auto]

The RIDE paper reports about 140 s per 224x224 image on a Titan X. Figures go to
results/benchmarks/ride.json.
"""

from __future__ import annotations

import argparse
import time

import torch

import defenses
from bench.benchmarks.common import sync, write_figures
from bench.core import data
from bench.core.device import resolve


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--iterations", type=int, default=100)
    p.add_argument("--checkpoints", type=int, default=2)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    device = resolve(args.device)
    x = data.load(args.dataset, "test", args.data_dir, limit=args.n).x.to(device)
    ride = defenses.create("ride", iterations=args.iterations, checkpoints=args.checkpoints, lr=1e-2)
    seeds = list(range(len(x)))
    sync(device)
    t0 = time.perf_counter()
    batched = ride.purify(x, seeds)
    sync(device)
    t1 = time.perf_counter()
    alone = torch.cat([ride.purify(x[i : i + 1], [seeds[i]]) for i in range(len(x))])
    sync(device)
    t2 = time.perf_counter()
    figures = {"device": str(device), "dataset": args.dataset, "images": len(x), "iterations": args.iterations,
               "checkpoints": args.checkpoints, "batched_images_per_s": len(x) / (t1 - t0),
               "one_at_a_time_images_per_s": len(x) / (t2 - t1), "speedup": (t2 - t1) / (t1 - t0),
               "max_abs_difference": float((batched - alone).abs().max())}
    print(f"batched {figures['batched_images_per_s']:.2f} img/s, one at a time "
          f"{figures['one_at_a_time_images_per_s']:.2f} img/s: {figures['speedup']:.1f}x "
          f"(max difference {figures['max_abs_difference']:.2e})")
    print(f"written to {write_figures('ride', figures)}")
    return figures


if __name__ == "__main__":
    main()
