"""CW-L2 and JSMA on CIFAR-10's ResNet-32, before and after, in one run (issue 33).

    python -m bench.benchmarks.cw_jsma [--n 32] [--cw-steps 100] [--cw-search 9]

Both attacks at cifar10-pretrained's settings (targeted; JSMA gamma 0.1; CW-L2 lr 0.01, c0 = 0.1,
100 Adam steps x 9 binary-search steps), one thread, the first ``--n`` test images:

- JSMA: the whole batch every iteration (``compact=False``, the code before) against only the rows
  still short of their target (``compact=True``, the default now): seconds, rows identical, targets
  reached.
- CW-L2: the default against the candidates for a cheaper run: 5 binary-search steps (the warm start
  and the lr decay make the last search steps refine little) and the paper's early abort
  (``abort_early``): seconds, success rate, median L2 of the successes, rows whose success differs. The
  bare cost of the same number of forward + backward passes of the model shows how much of CW-L2's time
  is the model's (no Python-side saving can beat that share).

Seconds are the process's CPU time (one thread), not wall time, so other work sharing the machine
does not inflate one variant more than another. Writes results/benchmarks/cw-jsma.json. Needs
BENCH_DATA_DIR and BENCH_WEIGHTS_DIR.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch

import attacks
from bench.benchmarks.common import cpu_model, pretrained_resnet32, write_figures
from bench.core import data


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.process_time()
    out = fn()
    return out, time.process_time() - start


def _bare_step_seconds(model: torch.nn.Module, x: torch.Tensor, repeats: int = 10) -> float:
    """One forward + backward pass of the model on the batch (to the input), fastest of ``repeats``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        xa = x.clone().requires_grad_(True)
        torch.autograd.grad(model(xa).sum(), xa)
        best = min(best, time.process_time() - start)
    return best


def _cw_summary(model: torch.nn.Module, x: torch.Tensor, x_adv: torch.Tensor, target: torch.Tensor) -> dict[str, Any]:
    with torch.no_grad():
        hit = model(x_adv).argmax(1) == target
    l2 = (x_adv - x).flatten(1).norm(dim=1)
    return {"success": hit, "success_rate": round(float(hit.float().mean()), 4),
            "median_l2": round(float(l2[hit].median()), 4) if hit.any() else None}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--cw-steps", type=int, default=100)
    ap.add_argument("--cw-search", type=int, default=9)
    ap.add_argument("--skip-cw", action="store_true", help="JSMA only (a minute instead of several)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    test = data.load("cifar10", "test", limit=args.n)
    x, y = test.x, test.y
    model = pretrained_resnet32()
    for prm in model.parameters():
        prm.requires_grad_(False)
    figures: dict[str, Any] = {"cpu": cpu_model(), "n": args.n, "model": "resnet32 (akamaster, CIFAR-10)",
                               "seconds": "CPU time of the process, one thread"}

    jsma: dict[str, Any] = {}
    outs = {}
    for label, compact in (("before: whole batch", False), ("after: live rows only", True)):
        atk = attacks.create("jsma", targeted=True, gamma=0.1, seed=0, batch_size=args.n, compact=compact)
        outs[label], secs = _timed(lambda a=atk: a(model, x, y))
        jsma[label] = {"seconds": round(secs, 2)}
    before, after = outs.values()
    jsma["rows_identical"] = int((before == after).flatten(1).all(1).sum())
    jsma["speedup"] = round(jsma["before: whole batch"]["seconds"] / jsma["after: live rows only"]["seconds"], 2)
    figures["jsma"] = jsma
    print(f"JSMA  before {jsma['before: whole batch']['seconds']:7.1f} s   after "
          f"{jsma['after: live rows only']['seconds']:7.1f} s   {jsma['speedup']:.2f}x   rows identical "
          f"{jsma['rows_identical']} of {args.n}")

    if not args.skip_cw:
        base = {"targeted": True, "lr": 0.01, "initial_const": 0.1, "steps": args.cw_steps, "seed": 0,
                "batch_size": args.n}
        default = f"default ({args.cw_steps} steps x {args.cw_search} search)"
        variants = {default: {"binary_search_steps": args.cw_search},
                    "5 search steps": {"binary_search_steps": min(5, args.cw_search)},
                    "abort_early": {"binary_search_steps": args.cw_search, "abort_early": True}}
        cw: dict[str, Any] = {}
        ref = None
        for label, extra in variants.items():
            atk = attacks.create("cw-l2", **base, **extra)
            res, secs = _timed(lambda a=atk: a.run(model, x, y))
            summary = _cw_summary(model, x, res.x_adv, res.target)
            hit = summary.pop("success")
            ref = hit if ref is None else ref
            cw[label] = {"seconds": round(secs, 2), **summary, "success_differs_from_default": int((hit != ref).sum())}
        bare = _bare_step_seconds(model, x)
        total = args.cw_steps * args.cw_search
        cw["bare_fwd_bwd_seconds"] = round(bare * total, 2)
        cw["model_share_of_default"] = round(bare * total / cw[default]["seconds"], 3)
        figures["cw_l2"] = cw
        for label in variants:
            r = cw[label]
            print(f"CW-L2 {label:28s} {r['seconds']:7.1f} s  success {100 * r['success_rate']:5.1f}%  median L2 "
                  f"{r['median_l2']}  success differs on {r['success_differs_from_default']}")
        print(f"CW-L2 bare model passes: {cw['bare_fwd_bwd_seconds']:.1f} s "
              f"({100 * cw['model_share_of_default']:.0f}% of the default's time)")
    print(f"written {write_figures('cw-jsma', figures)}")
    return figures


if __name__ == "__main__":
    main()
