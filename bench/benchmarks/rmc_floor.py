"""RMC's cost per test point against its floor, with the epochs adaptation and calibration ran and why
they stopped (RMC: Wu, Yuan, Wu, ICML 2020, Algorithm 1).

    python -m bench.benchmarks.rmc_floor --dataset digits --k 1024 --points 10 --label after
    python -m bench.benchmarks.rmc_floor --dataset cifar10 --arch resnet32 --data-dir ../shared/data \\
        --weights ../shared/weights/cifar10-resnet/resnet32-d509ac18.th --db-size 500 --k 1024 --points 2

The floor of one point is what the algorithm cannot avoid: for adaptation and calibration, the epochs
they ran x (ceil(K_train / batch) Adam steps at the measured cost of one forward + backward + step,
plus one validation forward), one initial validation forward each, the faiss search and the
prediction. Everything above it (state copies, re-allocation, Python work per step) is overhead.
``ratio`` = measured / floor. The per-step costs are measured on a private copy of the model, so the
defense's state is untouched. On cifar10 the stand-in D is the first ``--db-size`` images of the
shared 1,000 CIFAR-10 test images (no training split is available offline); test points follow them.

Figures are merged into results/benchmarks/rmc_floor.json under "<dataset>-k<K>" / ``--label``
(e.g. before / after a change), so one file holds both.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import defenses
from bench.core import data, models
from bench.core.device import resolve
from bench.core.timing import best_time, cpu_model, write_figures
from bench.run.runner import resolve_params

OUT = Path("results/benchmarks/rmc_floor.json")


def model_and_sets(args: argparse.Namespace, device: torch.device) -> tuple[Any, data.Dataset, data.Dataset]:
    if args.dataset == "cifar10":
        full = data.load("cifar10", "test", args.data_dir)
        d = args.db_size
        train = data.Dataset("cifar10", "train", full.x[:d], full.y[:d], full.num_classes)
        test = data.Dataset("cifar10", "test", full.x[d : d + args.points], full.y[d : d + args.points],
                            full.num_classes)
        model = models.load(args.arch, args.weights).to(device)
    else:
        train = data.load(args.dataset, "train", args.data_dir)
        test = data.load(args.dataset, "test", args.data_dir, limit=args.points)
        torch.manual_seed(0)
        model = models.create(args.arch, train.num_classes, train.x.shape[1])
        path = Path(args.cache_dir) / "benchmark-models" / f"{args.dataset}-{args.arch}-standard.pt"
        if path.is_file():  # before / after runs attack the same model without retraining it
            model.load_state_dict(torch.load(path, weights_only=True))
        else:
            std = defenses.DEFENSES.get("standard")
            model = std(**resolve_params(std, train.family, {}, seed=0)).train(model, train, device=device)
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), path)
    model = model.to(device).eval()
    for prm in model.parameters():
        prm.requires_grad_(False)
    return model, train, test


def step_costs(rmc: Any, device: torch.device) -> dict[str, float]:
    """Seconds of one Adam step (forward + backward + step) at the batch size and at the last partial
    batch, of one validation forward, and of one faiss search: measured on a copy of the model."""
    net = copy.deepcopy(rmc.adapted_model).eval()
    opt = torch.optim.Adam(net.parameters(), lr=rmc.lr)
    n_val = max(1, int(round(rmc.k_eff * rmc.val_fraction)))
    n_train = rmc.k_eff - n_val
    db = rmc.database
    x, y = db.x[: rmc.batch_size].to(device), db.y[: rmc.batch_size].to(device)

    def step(b: int) -> None:
        loss = F.cross_entropy(net(x[:b]), y[:b])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def val() -> None:
        with torch.no_grad():
            F.cross_entropy(net(db.x[:n_val].to(device)), db.y[:n_val].to(device))

    rest = n_train % rmc.batch_size
    feats = rmc.model.features(db.x[:1].to(device)).detach()
    return {"step": best_time(lambda: step(rmc.batch_size), device),
            "partial_step": best_time(lambda: step(rest), device) if rest else 0.0,
            "full_batches": n_train // rmc.batch_size, "val_forward": best_time(val, device),
            "search": best_time(lambda: rmc.index.search(feats, rmc.k), torch.device("cpu")),
            "predict": best_time(lambda: rmc.adapted_model(db.x[:1].to(device)), device)}


def floor_seconds(epochs: int, cost: dict[str, float]) -> float:
    """Unavoidable seconds of one early-stopped fit that ran ``epochs`` epochs."""
    per_epoch = cost["full_batches"] * cost["step"] + cost["partial_step"] + cost["val_forward"]
    return cost["val_forward"] + epochs * per_epoch


def _fits_recorder(rmc: Any) -> list[int]:
    """Epoch counts of every fit_early_stopped call (works on code that does not record them itself)."""
    counts: list[int] = []
    fit = rmc.fit_early_stopped

    def recording(*a: Any, **kw: Any) -> int:
        done = fit(*a, **kw)
        counts.append(done)
        return done

    rmc.fit_early_stopped = recording
    return counts


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--arch", default=None, help="default: small-cnn (digits), resnet32 (cifar10)")
    p.add_argument("--weights", default=None, help="checkpoint for --arch (cifar10)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--db-size", type=int, default=500, help="cifar10: stand-in D size")
    p.add_argument("--copies", type=int, default=1)
    p.add_argument("--k", type=int, default=None, help="default: the dataset's RMC default")
    p.add_argument("--points", type=int, default=10)
    p.add_argument("--max-epochs", type=int, default=None,
                   help="cap both fits (default: the dataset's RMC default); bounds a CPU run, keeps the ratio")
    p.add_argument("--label", default="after")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: leave as is)")
    p.add_argument("--cache-dir", default=".bench-cache")
    args = p.parse_args(argv)
    args.arch = args.arch or ("resnet32" if args.dataset == "cifar10" else "small-cnn")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve(args.device)
    model, train, test = model_and_sets(args, device)
    factory = defenses.DEFENSES.get("rmc")
    over = {"copies": args.copies, **({"k": args.k} if args.k else {}),
            **({"max_epochs": args.max_epochs} if args.max_epochs else {})}
    params = resolve_params(factory, train.family, over, seed=0, cache_dir=args.cache_dir)
    rmc = factory(**params).prepare(model, train)
    rmc.k_eff = min(rmc.k, len(rmc.database.y))
    rmc.reset()
    counts = _fits_recorder(rmc)
    points = []
    for i in range(len(test.x)):
        start = time.perf_counter()
        rmc.predict(test.x[i : i + 1].to(device))
        seconds = time.perf_counter() - start
        adapt_epochs, calib_epochs = counts[-2:] if rmc.calibrate else (counts[-1], 0)
        rec = {"seconds": seconds, "adapt_epochs": adapt_epochs, "calib_epochs": calib_epochs,
               **{k: round(v, 4) for k, v in rmc.last_timing.items()}}
        stats = getattr(rmc, "last_stats", None)  # stop reasons, where the code records them
        if stats:
            rec.update({k: v for k, v in stats[-1].items() if k.endswith("_stop")})
        points.append(rec)
        print(f"point {i}: {seconds:.2f} s, adaptation {adapt_epochs} epochs, calibration {calib_epochs} epochs "
              f"{ {k: v for k, v in rec.items() if k.endswith('_stop')} }")
    cost = step_costs(rmc, device)
    floors = [floor_seconds(pt["adapt_epochs"], cost) + floor_seconds(pt["calib_epochs"], cost)
              + cost["search"] + cost["predict"] for pt in points]
    total, floor = sum(pt["seconds"] for pt in points), sum(floors)
    # The issue's floor omits the validation forwards: K / batch x epochs x (forward + backward) + search.
    issue_floor = sum((pt["adapt_epochs"] + pt["calib_epochs"]) * (cost["full_batches"] * cost["step"]
                      + cost["partial_step"]) + cost["search"] for pt in points)
    fig = {"label": args.label, "device": str(device), "cpu": cpu_model(), "arch": args.arch,
           "threads": torch.get_num_threads(), "k": rmc.k,
           "k_effective": rmc.k_eff, "database_size": len(rmc.database.y), "batch_size": rmc.batch_size,
           "max_epochs": rmc.max_epochs, "patience": rmc.patience, "points": len(points),
           "seconds_per_point": total / len(points), "floor_per_point": floor / len(points),
           "ratio_to_floor": total / floor,
           "ratio_to_issue_floor": total / issue_floor, "costs": {k: round(v, 6) for k, v in cost.items()},
           "per_point": points, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "command": "python -m bench.benchmarks.rmc_floor " + " ".join(argv if argv is not None else
                                                                         __import__("sys").argv[1:])}
    print(f"{args.dataset} K={rmc.k}: {fig['seconds_per_point']:.3f} s/point, floor {fig['floor_per_point']:.3f} s "
          f"(ratio {fig['ratio_to_floor']:.2f}; issue's floor ratio {fig['ratio_to_issue_floor']:.2f})")
    existing = json.loads(OUT.read_text()) if OUT.exists() else {}
    existing.pop("torch", None)
    key = f"{args.dataset}-k{rmc.k}"
    existing.setdefault(key, {})[args.label] = fig
    print(f"written to {write_figures('rmc_floor', existing)}")
    return fig


if __name__ == "__main__":
    main()
