"""One RMC adaptation step on CIFAR-10's ResNet-32 in float32, bfloat16 autocast and channels-last.

    python -m bench.benchmarks.adapt_precision [--batch 64] [--repeats 5]

RMC's cost is ResNet-32 forward and backward passes over K neighbours (bench.benchmarks.profile_cells:
81% of an RMC cell's samples are autograd's backward and convolutions), so the candidates of a faster
adaptation are cheaper passes. This times one SGD step (forward, cross-entropy, backward, update) on a
batch of the first CIFAR-10 test images, one thread, fastest of ``--repeats``, for each variant, and the
share of the batch on which the bfloat16 model's predictions after 5 such steps equal float32's.
Writes results/benchmarks/adapt-precision.json. Needs BENCH_DATA_DIR and BENCH_WEIGHTS_DIR.
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F

from bench.benchmarks.common import best_time, cpu_model, pretrained_resnet32, write_figures
from bench.core import data


def _step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
          bf16: bool) -> None:
    opt.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64, help="neighbours per step (the grid's K = 64)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    test = data.load("cifar10", "test")
    x, y = test.x[: args.batch], test.y[: args.batch]
    base = pretrained_resnet32()
    variants = {"float32": (False, False), "bfloat16 autocast": (True, False), "float32 channels-last": (False, True),
                "bfloat16 autocast, channels-last": (True, True)}
    out: dict[str, float] = {}
    preds = {}
    for name, (bf16, cl) in variants.items():
        model = copy.deepcopy(base).train()
        xs = x.contiguous(memory_format=torch.channels_last) if cl else x
        if cl:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        out[name] = best_time(lambda m=model, o=opt, b=bf16, v=xs: _step(m, o, v, y, b), torch.device("cpu"),
                              repeats=args.repeats)
        fresh = copy.deepcopy(base).train()
        opt = torch.optim.SGD(fresh.parameters(), lr=1e-3)
        for _ in range(5):
            _step(fresh, opt, x, y, bf16)
        with torch.no_grad():
            preds[name] = fresh.eval()(x).argmax(1)
    same = float((preds["bfloat16 autocast"] == preds["float32"]).float().mean())
    figures = {"cpu": cpu_model(), "batch": args.batch, "step_seconds": {k: round(v, 4) for k, v in out.items()},
               "speedup_vs_float32": {k: round(out["float32"] / v, 2) for k, v in out.items()},
               "bf16_predictions_equal_after_5_steps": round(same, 3)}
    for k, v in out.items():
        print(f"{k:34s} {1000 * v:8.1f} ms a step  ({out['float32'] / v:.2f}x float32)")
    print(f"bfloat16 predictions equal to float32's after 5 steps: {100 * same:.1f}% of {args.batch}")
    print(f"written {write_figures('adapt-precision', figures)}")


if __name__ == "__main__":
    main()
