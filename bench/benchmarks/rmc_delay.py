"""RMC delay per test point, broken into search + adaptation, prediction, calibration (and RMC+ refresh),
with faiss search against a brute-force torch search in the same run.

    python -m bench.benchmarks.rmc_delay [--dataset digits] [--points 30] [--device auto]

The RMC paper reports about 1 s per CIFAR-10 point on a V100 (supplement D). Figures go to
results/benchmarks/rmc_delay.json.
"""

from __future__ import annotations

import argparse
import time

import torch

import defenses
from bench.core import data, models
from bench.core.device import resolve
from bench.core.timing import best_time, write_figures
from bench.run.runner import resolve_params
from defenses.knn_index import brute_force_search


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--arch", default="small-cnn")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--points", type=int, default=30)
    p.add_argument("--device", default="auto")
    p.add_argument("--cache-dir", default=".bench-cache")
    args = p.parse_args(argv)
    device = resolve(args.device)
    train = data.load(args.dataset, "train", args.data_dir)
    test = data.load(args.dataset, "test", args.data_dir, limit=args.points)
    torch.manual_seed(0)
    model = models.create(args.arch, train.num_classes, train.x.shape[1])
    std = defenses.DEFENSES.get("standard")
    model = std(**resolve_params(std, train.family, {}, seed=0)).train(model, train, device=device)
    for prm in model.parameters():
        prm.requires_grad_(False)
    figures: dict = {"device": str(device), "dataset": args.dataset, "points": args.points}
    for name in ("rmc", "rmc-plus"):
        factory = defenses.DEFENSES.get(name)
        params = resolve_params(factory, train.family, {}, seed=0, cache_dir=args.cache_dir)
        rmc = factory(**params).prepare(model, train)
        rmc.reset()
        start = time.perf_counter()
        rmc.predict(test.x.to(device))
        total = time.perf_counter() - start
        per_point = {k: v / args.points for k, v in rmc.last_timing.items()}
        figures[name] = {"k": rmc.k, "database_size": len(rmc.database.y), "seconds_per_point": total / args.points,
                         "breakdown_per_point": per_point}
        print(f"{name}: {1000 * total / args.points:.1f} ms/point; " +
              ", ".join(f"{k} {1000 * v:.1f} ms" for k, v in per_point.items()))
    feats = rmc.database.features
    queries = model.features(test.x.to(device)).cpu()
    t_faiss = best_time(lambda: [rmc.index.search(q[None], rmc.k) for q in queries], torch.device("cpu"))
    t_brute = best_time(lambda: [brute_force_search(feats, q[None], rmc.k) for q in queries], torch.device("cpu"))
    figures["search_ms_per_point"] = {"faiss": 1000 * t_faiss / args.points,
                                      "brute_force": 1000 * t_brute / args.points,
                                      "brute_over_faiss": t_brute / t_faiss, "faiss_on_gpu": rmc.index.on_gpu}
    print(f"search per point: faiss {figures['search_ms_per_point']['faiss']:.3f} ms, brute force "
          f"{figures['search_ms_per_point']['brute_force']:.3f} ms ({t_brute / t_faiss:.2f}x)")
    print(f"written to {write_figures('rmc_delay', figures)}")
    return figures


if __name__ == "__main__":
    main()
