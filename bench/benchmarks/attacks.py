"""PGD speed: ours vs foolbox's LinfPGD (and torchattacks' PGD when importable) vs the bare cost.

    python -m bench.benchmarks.attacks [--n 100] [--steps 10] [--device auto]

Same model (CIFAR-10 ResNet-32 from --weights, else a random ResNet-32), images, steps and device
for every peer in one run. The bare cost is steps x (forward + backward) of the model on the batch.
torchattacks pins an old `requests` that breaks mlflow, so it is not a dependency: run
`tox -e bench-attacks-peers` (its own env) or install it in a throwaway venv to include it.
Figures go to results/benchmarks/attacks.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

import attacks
from bench.core import data, models
from bench.core.device import resolve
from bench.core.timing import best_time, write_figures


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--weights", default="../shared/weights/cifar10-resnet/resnet32-d509ac18.th")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    device = resolve(args.device)
    model = (models.load("resnet32", args.weights) if Path(args.weights).is_file()
             else models.create("resnet32")).to(device).eval()
    for prm in model.parameters():
        prm.requires_grad_(False)
    try:
        ds = data.load("cifar10", "test", args.data_dir, limit=args.n)
        x, y = ds.x.to(device), ds.y.to(device)
    except Exception:
        x, y = torch.rand(args.n, 3, 32, 32, device=device), torch.randint(0, 10, (args.n,), device=device)
    eps, alpha = 8 / 255, 2 / 255

    def bare() -> None:
        xa = x.clone()
        for _ in range(args.steps):
            xa.requires_grad_(True)
            (g,) = torch.autograd.grad(F.cross_entropy(model(xa), y), xa)
            xa = xa.detach() + alpha * g.sign()

    ours_attack = attacks.create("pgd", eps=eps, steps=args.steps, step_size=alpha, batch_size=len(x))
    timings = {"bare_steps_fwd_bwd": best_time(bare, device, args.repeats),
               "ours": best_time(lambda: ours_attack(model, x, y), device, args.repeats)}
    import foolbox as fb

    fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=device)
    fb_attack = fb.attacks.LinfPGD(steps=args.steps, abs_stepsize=alpha, random_start=True)
    timings["foolbox"] = best_time(lambda: fb_attack(fmodel, x, y, epsilons=eps), device, args.repeats)
    try:
        import torchattacks

        ta = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=args.steps, random_start=True)
        timings["torchattacks"] = best_time(lambda: ta(x, y), device, args.repeats)
    except ImportError:
        print("torchattacks not importable: skipped (tox -e bench-attacks-peers includes it)")
    peers = {k: v for k, v in timings.items() if k in ("foolbox", "torchattacks")}
    fastest = min(peers, key=peers.get)
    figures = {"device": str(device), "n": len(x), "steps": args.steps, "seconds": timings,
               "ours_over_fastest_peer": timings["ours"] / peers[fastest], "fastest_peer": fastest,
               "ours_over_bare": timings["ours"] / timings["bare_steps_fwd_bwd"]}
    for k, v in timings.items():
        print(f"{k:22s} {v:8.3f} s")
    print(f"ours / fastest peer ({fastest}): {figures['ours_over_fastest_peer']:.3f}  (goal <= 1.0)")
    print(f"ours / bare steps x (fwd+bwd): {figures['ours_over_bare']:.3f}  (goal <= 1.10)")
    print(f"written to {write_figures('attacks', figures)}")
    return figures


if __name__ == "__main__":
    main()
