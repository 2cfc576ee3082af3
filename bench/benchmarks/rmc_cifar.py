"""RMC on CIFAR-10's ResNet-32: seconds per test point in float32 and bfloat16, K = 64 and 1,024, in one
run, with the predictions compared (RMC: Wu, Yuan, Wu, ICML 2020, Algorithm 1; issue 33).

    python -m bench.benchmarks.rmc_cifar [--points 4] [--k 64 1024] [--max-epochs 10]
    python -m bench.benchmarks.rmc_cifar --sweep [--k 64 256 1024] [--n 25 50 100]

Setting: the stand-in D is CIFAR-10 test images 200-999 with one PGD copy (D' of 1,600 rows, so K =
1,024 fits), the test points are images 0, 1, ...; RMC at cifar10-pretrained's caps (max_epochs 10,
the dataset's other defaults: lr 2.5e-5, batch 128, patience 5, calibration on); one thread; seconds
are the process's CPU time on a CPU (other work sharing the machine does not inflate them). The D' is
built once and cached (``--cache-dir``), so every variant adapts over the same neighbours.

Default mode: for each K, float32 (the code before), ``precision = "bfloat16"`` and float32 with
``min_delta`` (an epoch must lower the validation loss by that share to count) stream the same
``--points`` clean points; prints seconds per point, the speed-up and how many predictions equal
float32's; writes results/benchmarks/rmc-cifar.json.

``--sweep``: wall time of an RMC cell (a clean stream of n points, float32) against n and K: for each K
one stream of max(n) points, the cell time at n = the time after its first n points (a cell of n points
is exactly that prefix), plus the fitted cost per point ``a + b K``.
``--sweep-from results/benchmarks/rmc-cifar.json`` predicts the same table from a compare run's seconds
per point, running nothing (every cell marked predicted). ``--n-max-for-k K=N`` stops K's stream
early (e.g. 1024=25): the table marks the cells beyond it as predicted from the fit. Writes
results/benchmarks/rmc-scaling.json (rmc-scaling-cuda.json on a GPU) and, with --plot,
docs/rmc-scaling.png. On a GPU, run it with ``--device cuda`` (bench.benchmarks.gpu_check does).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

import defenses
from bench.benchmarks.common import cpu_model, pretrained_resnet32, write_figures
from bench.core import data
from bench.core.device import resolve
from bench.run.runner import resolve_params


def model_and_sets(data_dir: str | None, weights_dir: str, db_from: int, points: int,
                   device: torch.device) -> tuple[torch.nn.Module, data.Dataset, data.Dataset]:
    full = data.load("cifar10", "test", data_dir)
    train = data.Dataset("cifar10", "train", full.x[db_from:], full.y[db_from:], full.num_classes)
    test = data.Dataset("cifar10", "test", full.x[:points], full.y[:points], full.num_classes)
    model = pretrained_resnet32(weights_dir).to(device)
    for prm in model.parameters():
        prm.requires_grad_(False)
    return model, train, test


def stream(model: torch.nn.Module, train: data.Dataset, test: data.Dataset, k: int, precision: str,
           max_epochs: int, cache_dir: str, device: torch.device,
           min_delta: float = 0.0) -> tuple[list[float], torch.Tensor]:
    """Seconds of each point of one clean RMC stream, and its predictions: CPU time of the process on a
    CPU (other work on the machine does not inflate it), wall time on a GPU."""
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    factory = defenses.DEFENSES.get("rmc")
    params = resolve_params(factory, train.family, {"k": k, "copies": 1, "max_epochs": max_epochs,
                                                   "precision": precision, "min_delta": min_delta},
                            seed=0, cache_dir=cache_dir)
    rmc = factory(**params).prepare(model, train)
    rmc.reset()
    seconds, preds = [], []
    for i in range(len(test.x)):
        start = clock()
        preds.append(rmc.predict(test.x[i : i + 1].to(device)).argmax(1).cpu())
        seconds.append(clock() - start)
    return seconds, torch.cat(preds)


def compare(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    model, train, test = model_and_sets(args.data_dir, args.weights_dir, args.db_from, args.points, device)
    out: dict[str, Any] = {}
    variants = {"float32": ("float32", 0.0), "bfloat16": ("bfloat16", 0.0),
                f"float32, min_delta {args.min_delta:g}": ("float32", args.min_delta)}
    for k in args.k:
        runs = {v: stream(model, train, test, k, p, args.max_epochs, args.cache_dir, device, md)
                for v, (p, md) in variants.items()}
        per_point = {v: sum(s) / len(s) for v, (s, _) in runs.items()}
        ref = runs["float32"][1]
        out[f"k{k}"] = {"seconds_per_point": {v: round(t, 3) for v, t in per_point.items()},
                        "speedup_vs_float32": {v: round(per_point["float32"] / t, 2) for v, t in per_point.items()},
                        "predictions_equal_to_float32": {v: int((pr == ref).sum()) for v, (_, pr) in runs.items()},
                        "points": len(test.x),
                        "accuracy": {v: round(float((pr == test.y).float().mean()), 3) for v, (_, pr) in runs.items()}}
        for v, t in per_point.items():
            print(f"K={k:5d}  {v:26s} {t:7.2f} s/point  {per_point['float32'] / t:.2f}x  predictions equal to "
                  f"float32's {out[f'k{k}']['predictions_equal_to_float32'][v]} of {len(test.x)}")
    return out


def sweep(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    n_max = max(args.n)
    caps = dict(item.split("=") for item in args.n_max_for_k)
    model, train, test_all = model_and_sets(args.data_dir, args.weights_dir, args.db_from, n_max, device)
    measured: dict[int, list[float]] = {}
    for k in args.k:
        stop = min(n_max, int(caps.get(str(k), n_max)))
        test = data.Dataset("cifar10", "test", test_all.x[:stop], test_all.y[:stop], test_all.num_classes)
        measured[k], _ = stream(model, train, test, k, "float32", args.max_epochs, args.cache_dir, device)
        print(f"K={k}: {len(measured[k])} points, {sum(measured[k]) / len(measured[k]):.2f} s a point")
    return scaling_table(measured, args.k, args.n, args.plot)


def sweep_from(path: Path, ks: list[int], ns: list[int], plot: str | None) -> dict[str, Any]:
    """The n x K table predicted from a compare run's float32 seconds per point (no stream measured here:
    every cell of the table is marked predicted)."""
    import json

    runs = json.loads(Path(path).read_text())
    per_point = {int(key[1:]): [v["seconds_per_point"]["float32"]] * int(v["points"])
                 for key, v in runs.items() if key.startswith("k") and key[1:].isdigit()}
    out = scaling_table(per_point, ks, ns, plot, measured=False)
    out["fitted_from"] = {"file": str(path), "cpu": runs.get("cpu"), "command": runs.get("command"),
                          "points_per_k": {str(k): len(v) for k, v in per_point.items()}}
    return out


def scaling_table(per_point: dict[int, list[float]], ks: list[int], ns: list[int], plot: str | None,
                  measured: bool = True) -> dict[str, Any]:
    """Cell seconds against n and K: the first n points' sum where measured (a cell of n points is that
    prefix of the stream), else n x the least-squares cost per point a + b K."""
    kt = torch.tensor([float(k) for k, s in per_point.items() for _ in s])
    ts = torch.tensor([t for s in per_point.values() for t in s])
    a, b = torch.linalg.lstsq(torch.stack([torch.ones_like(kt), kt], 1), ts[:, None]).solution.flatten().tolist()
    table = []
    for k in ks:
        for n in sorted(ns):
            have = per_point.get(k, []) if measured else []
            seconds = sum(have[:n]) if 0 < n <= len(have) else None
            table.append({"k": k, "n": n, "seconds": None if seconds is None else round(seconds, 1),
                          "predicted_seconds": round(n * (a + b * k), 1), "measured": seconds is not None})
    for row in table:
        shown = (f"{row['seconds']:8.1f} s measured" if row["measured"]
                 else f"{row['predicted_seconds']:8.1f} s predicted")
        print(f"K={row['k']:5d} n={row['n']:4d}  {shown}")
    print(f"fitted cost per point: {a:.3f} s + {b * 1000:.3f} ms x K")
    fig = {"table": table, "fit": {"a_seconds": round(a, 4), "b_seconds_per_neighbour": round(b, 6)},
           "points_measured": {str(k): len(v) for k, v in per_point.items()} if measured else {}}
    if plot:
        plot_sweep(fig, Path(plot), ks)
    return fig


def plot_sweep(fig: dict[str, Any], path: Path, ks: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f, ax = plt.subplots(figsize=(6, 4))
    for k in ks:
        rows = [r for r in fig["table"] if r["k"] == k]
        ax.plot([r["n"] for r in rows], [r["predicted_seconds"] / 60 for r in rows], "--", alpha=0.6)
        got = [r for r in rows if r["measured"]]
        ax.plot([r["n"] for r in got], [r["seconds"] / 60 for r in got], "o-", color=ax.lines[-1].get_color(),
                label=f"K = {k}")
    ax.set_xlabel("test points n")
    ax.set_ylabel("one RMC stream of n points (minutes)")
    how = "dashed: a + bK fit" if any(r["measured"] for r in fig["table"]) else "a + bK fit, predicted: no stream run"
    ax.set_title(f"RMC on CIFAR-10 ResNet-32, float32, one core (CPU time)\n{cpu_model()} ({how})", fontsize=9)
    ax.legend()
    f.tight_layout()
    f.savefig(path, dpi=110)
    plt.close(f)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import os

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", action="store_true", help="cell wall time against n and K (float32)")
    ap.add_argument("--sweep-from", default=None, metavar="JSON",
                    help="the sweep's table predicted from a compare run's results (rmc-cifar.json), no stream run")
    ap.add_argument("--k", type=int, nargs="+", default=None, help="default: 64 1024 (sweep: 64 256 1024)")
    ap.add_argument("--n", type=int, nargs="+", default=[25, 50, 100], help="sweep: stream lengths")
    ap.add_argument("--n-max-for-k", nargs="*", default=[], metavar="K=N", help="sweep: stop K's stream at N points")
    ap.add_argument("--points", type=int, default=4, help="compare: points per stream")
    ap.add_argument("--max-epochs", type=int, default=10)
    ap.add_argument("--min-delta", type=float, default=0.01, help="compare: the min_delta variant's value")
    ap.add_argument("--db-from", type=int, default=200, help="D = test images from here to 999")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--weights-dir", default=os.environ.get("BENCH_WEIGHTS_DIR", "../shared/weights"))
    ap.add_argument("--cache-dir", default=".bench-cache")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--plot", nargs="?", const="docs/rmc-scaling.png", default=None, metavar="PNG",
                    help="sweep: also draw the table as a PNG (default path: docs/rmc-scaling.png)")
    args = ap.parse_args(argv)
    args.k = args.k or ([64, 256, 1024] if args.sweep or args.sweep_from else [64, 1024])
    torch.set_num_threads(args.threads)
    device = resolve(args.device)
    figures: dict[str, Any] = {"cpu": cpu_model(), "device": str(device), "max_epochs": args.max_epochs,
                               "database": f"CIFAR-10 test images {args.db_from}-999 + 1 PGD copy",
                               "command": "python -m bench.benchmarks.rmc_cifar "
                                          + " ".join(argv if argv is not None else __import__("sys").argv[1:])}
    if args.sweep_from:
        figures.update(sweep_from(Path(args.sweep_from), args.k, args.n, args.plot))
        name = "rmc-scaling"
    elif args.sweep:
        figures.update(sweep(args, device))
        name = "rmc-scaling" if device.type == "cpu" else f"rmc-scaling-{device.type}"
    else:
        figures.update(compare(args, device))
        name = "rmc-cifar" if device.type == "cpu" else f"rmc-cifar-{device.type}"
    print(f"written {write_figures(name, figures)}")
    return figures


if __name__ == "__main__":
    main()
