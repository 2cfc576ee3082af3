"""RIDE throughput: a whole batch of per-image networks trained as one grouped convolution vs one
image at a time, same settings, one run.

    python -m bench.benchmarks.ride [--dataset digits] [--n 32] [--iterations 100] [--device auto]
    python -m bench.benchmarks.ride --dataset imagenet --data-dir ../shared/data/imagenet-samples \
        --n 2 --iterations 5 --checkpoints 1 --hidden-layers 7 --lr 1e-4 [--network table3]

The RIDE paper reports about 140 s per 224x224 image on a Titan X (2,000 iterations x 5 checkpoints,
8-layer net). A few iterations are timed and the figure at ``--paper-iterations`` x
``--paper-checkpoints`` extrapolated from them (training steps dominate: each is one forward and
backward of the net; the estimation passes are timed too and scaled by checkpoints). Figures go to
results/benchmarks/ride.json (digits) or ride-<dataset>.json, with ``-table3`` for that network.
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
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--hidden-layers", type=int, default=None, help="RIDE net depth (ImageNet, Table 3: 7)")
    p.add_argument("--network", default="plain", choices=["plain", "table3"],
                   help="RIDE's net: plain (default) or table3 (Table 3's dropout and sigmoid output)")
    p.add_argument("--paper-iterations", type=int, default=2000)
    p.add_argument("--paper-checkpoints", type=int, default=5)
    args = p.parse_args(argv)
    from bench.run.runner import fix_threads

    fix_threads()  # $BENCH_NUM_THREADS (default 1), as the runner's cells
    device = resolve(args.device)
    x = data.load(args.dataset, "test", args.data_dir, limit=args.n).x.to(device)
    ride = defenses.create("ride", iterations=args.iterations, checkpoints=args.checkpoints, lr=args.lr,
                           hidden_layers=args.hidden_layers, network=args.network)
    seeds = list(range(len(x)))
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    batched = ride.purify(x, seeds)
    sync(device)
    t1, c1 = time.perf_counter(), time.process_time()
    alone = torch.cat([ride.purify(x[i : i + 1], [seeds[i]]) for i in range(len(x))])
    sync(device)
    t2, c2 = time.perf_counter(), time.process_time()
    figures = {"device": str(device), "dataset": args.dataset, "images": len(x), "iterations": args.iterations,
               "checkpoints": args.checkpoints, "batched_images_per_s": len(x) / (t1 - t0),
               "one_at_a_time_images_per_s": len(x) / (t2 - t1), "speedup": (t2 - t1) / (t1 - t0),
               "max_abs_difference": float((batched - alone).abs().max()),
               "image_shape": list(x.shape[1:]), "hidden_layers": args.hidden_layers,
               "network": args.network}
    steps = args.iterations * args.checkpoints
    paper_steps = args.paper_iterations * args.paper_checkpoints
    # seconds per image at the paper's settings, extrapolated linearly in the number of training steps
    figures["paper_settings"] = {"iterations": args.paper_iterations, "checkpoints": args.paper_checkpoints}
    figures["extrapolated_s_per_image_one_at_a_time"] = (t2 - t1) / len(x) * paper_steps / steps
    figures["extrapolated_s_per_image_batched"] = (t1 - t0) / len(x) * paper_steps / steps
    # On a shared machine wall time counts other people's work; CPU seconds (all threads) do not.
    figures["cpu_s_batched"], figures["cpu_s_one_at_a_time"] = c1 - c0, c2 - c1
    figures["extrapolated_cpu_s_per_image_one_at_a_time"] = (c2 - c1) / len(x) * paper_steps / steps
    print(f"batched {figures['batched_images_per_s']:.2f} img/s, one at a time "
          f"{figures['one_at_a_time_images_per_s']:.2f} img/s: {figures['speedup']:.1f}x "
          f"(max difference {figures['max_abs_difference']:.2e})")
    print(f"at {args.paper_iterations} x {args.paper_checkpoints} (extrapolated): "
          f"{figures['extrapolated_s_per_image_one_at_a_time']:.0f} s per image one at a time, "
          f"{figures['extrapolated_s_per_image_batched']:.0f} s batched")
    name = "ride" if args.dataset == "digits" else f"ride-{args.dataset}"
    name += "-table3" if args.network == "table3" else ""  # beside, not over, the plain net's figures
    print(f"written to {write_figures(name, figures)}")
    return figures


if __name__ == "__main__":
    main()
