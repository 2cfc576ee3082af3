"""Throughput of B independent RMC streams run together (defenses/rmc_batched.py) against the same
B streams run one after the other (RMC: Wu, Yuan, Wu, ICML 2020, Algorithm 1).

    python -m bench.benchmarks.rmc_batched --dataset digits --streams 1 4 16 --points 2 \\
        --cache-dir /tmp/batched16-cache
    python -m bench.benchmarks.rmc_batched --dataset cifar10 --data-dir ../shared/data \\
        --weights ../shared/weights/cifar10-resnet/resnet32-d509ac18.th --db-size 500 --k 64 \\
        --max-epochs 2 --points 1 --streams 1 4 16 --cache-dir /tmp/batched16-cache
    (the same with --k 128; each run under ``nice -n 19`` with BENCH_NUM_THREADS=1 and --threads 1)

Each stream is a different run of real test points (stream b: the b-th slice of ``--points`` test
images, as different attacks' x_adv would be), all with the dataset's RMC defaults (digits: the default
grid's K 128, 8 epochs, patience 2) unless overridden; cifar10's D is a stand-in, the first
``--db-size`` of the shared 1,000 CIFAR-10 test images (see rmc_floor.py). Sequential: reset, then
predict stream by stream. Batched: one BatchedRMC over all B streams (lock step: each fit runs until
its slowest stream stops). ``ratio`` = sequential seconds / batched seconds for the same B streams
(> 1: batching is faster). Float32, so the two are compared (max |logit difference|, equal stats), not
required to be bitwise equal. Figures are merged into results/benchmarks/rmc_batched.json under
"<dataset>-k<K>".

Measured (CPU, 1 thread, 2 cores shared with two 1-thread grids, load 3.4-4.1): batched is SLOWER
than sequential on CPU at every B (digits 0.67 / 0.75 / 0.89 at B = 1 / 4 / 16; ResNet-32 K 64
0.57 / 0.69 / 0.65, K 128 0.63 / 0.69 / 0.57): one grouped kernel for B streams costs about what B
separate kernels cost on a CPU, and functorch adds Python work per op (B = 1 is the pure overhead).
The gain this is built for is on a GPU (one launch for B streams); measure it there before grouping.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

import defenses
from bench.benchmarks.common import write_figures
from bench.benchmarks.rmc_floor import model_and_sets
from bench.core.device import resolve
from bench.run.runner import resolve_params
from defenses.rmc_batched import BatchedRMC

OUT = Path("results/benchmarks/rmc_batched.json")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--arch", default=None, help="default: small-cnn (digits), resnet32 (cifar10)")
    p.add_argument("--weights", default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--db-size", type=int, default=500)
    p.add_argument("--copies", type=int, default=1)
    p.add_argument("--k", type=int, default=None)
    p.add_argument("--max-epochs", type=int, default=None)
    p.add_argument("--points", type=int, default=2, help="points per stream")
    p.add_argument("--streams", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--cache-dir", default=".bench-cache")
    args = p.parse_args(argv)
    args.arch = args.arch or ("resnet32" if args.dataset == "cifar10" else "small-cnn")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve(args.device)
    need = max(args.streams) * args.points
    points, args.points = args.points, need  # load enough test points for every stream
    model, train, test = model_and_sets(args, device)
    args.points = points
    if len(test.x) < need:
        raise SystemExit(f"{need} test points needed, {len(test.x)} available")
    factory = defenses.DEFENSES.get("rmc")
    over = {"copies": args.copies, **({"k": args.k} if args.k else {}),
            **({"max_epochs": args.max_epochs} if args.max_epochs else {})}
    rmc = factory(**resolve_params(factory, train.family, over, seed=0, cache_dir=args.cache_dir))
    rmc.prepare(model, train)
    rmc.predict(test.x[:1])  # warm-up: first-call costs (imports, allocator) of both paths
    BatchedRMC(rmc, 1).predict(test.x[:1].unsqueeze(0))
    runs = []
    for b_streams in args.streams:
        xs = torch.stack([test.x[b * points : (b + 1) * points] for b in range(b_streams)])
        start = time.perf_counter()
        seq_out, seq_stats = [], []
        for b in range(b_streams):
            rmc.reset()
            seq_out.append(rmc.predict(xs[b]))
            seq_stats.append(rmc.last_stats)
        seq = time.perf_counter() - start
        rmc.reset()
        start = time.perf_counter()
        batched = BatchedRMC(rmc, b_streams)
        out = batched.predict(xs)
        bat = time.perf_counter() - start
        seq_out_t = torch.stack(seq_out)
        epochs = [s["adapt_epochs"] + s.get("calib_epochs", 0) for st in seq_stats for s in st]
        run = {"streams": b_streams, "points_per_stream": points, "sequential_s": round(seq, 3),
               "batched_s": round(bat, 3), "ratio": round(seq / bat, 3),
               "sequential_s_per_point": round(seq / (b_streams * points), 3),
               "batched_s_per_point": round(bat / (b_streams * points), 3),
               "epochs_sequential_total": sum(epochs),
               "max_abs_logit_diff": float((out - seq_out_t).abs().max()),
               "same_predictions": bool(torch.equal(out.argmax(-1), seq_out_t.argmax(-1))),
               "same_stats": batched.last_stats == seq_stats}
        runs.append(run)
        print(json.dumps(run))
    fig = {"device": str(device), "threads": torch.get_num_threads(), "arch": args.arch, "k": rmc.k,
           "batch_size": rmc.batch_size, "max_epochs": rmc.max_epochs, "patience": rmc.patience,
           "database_size": len(rmc.database.y), "dtype": "float32", "runs": runs,
           "load_average_at_end": os.getloadavg(),
           "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "command": "python -m bench.benchmarks.rmc_batched " + " ".join(argv if argv is not None else
                                                                           __import__("sys").argv[1:])}
    existing = json.loads(OUT.read_text()) if OUT.exists() else {}
    for key in ("torch", "python", "machine", "threads"):
        existing.pop(key, None)
    existing[f"{args.dataset}-k{rmc.k}"] = fig
    print(f"written to {write_figures('rmc_batched', existing)}")
    return fig


if __name__ == "__main__":
    main()
