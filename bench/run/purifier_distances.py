"""RIDE's Figure 7 per cell (Lin, Pfister, Zhang, "White-Box Adversarial Defense via Self-Supervised
Data Estimation"): why a purifier survives BPDA or not.

For a BPDA cell (threat "adaptive") on a purifier g, per test example: defend2adv = ||g(x_adv) -
x_adv||, adv2gt = ||x_adv - x||, defense2gt = ||g(x_adv) - x|| (Fig. 7a; L2 over the whole image in
[0, 1], our choice: the paper names no norm), and the classifier's top-1 accuracy on x_adv without
the defense (Fig. 7b; the accuracy on g(x_adv) is the cell's ``robust_acc``).

Cheap: g(x_adv) is the purification the cell's scored prediction already ran, recorded while it runs
(``recording``), so a random purifier's distances belong to the very draw that was scored. Only a
purifier whose ``predict`` does not go through ``transform`` costs one extra purification pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from bench.core.contracts import Purifier, StatefulDefense, batched_logits
from bench.spec.grid import Cell
from bench.spec.purifier_fields import ADV_ACC, DISTANCES, NAME, NORM, STATS, per_example_field


def applies(cell: Cell, defense: Any, attack: Any) -> bool:
    """Whether the metric belongs to this cell: BPDA, threat "adaptive", a stateless purifier."""
    from attacks.bpda import BPDAAttack

    return (cell.threat == "adaptive" and isinstance(attack, BPDAAttack) and isinstance(defense, Purifier)
            and not isinstance(defense, StatefulDefense))


def wanted(metrics: tuple[str, ...], cell: Cell, defense: Any, attack: Any) -> bool:
    """The grid asks for the metric and it applies to the cell."""
    return NAME in metrics and applies(cell, defense, attack)


@contextmanager
def recording(defense: Any | None) -> Iterator[list[torch.Tensor]]:
    """While the block runs, every output of ``defense.transform`` is appended to the yielded list
    (in call order: ``Purifier.predict`` purifies its batches in order). ``None``: records nothing."""
    seen: list[torch.Tensor] = []
    if defense is None:
        yield seen
        return
    own = "transform" in vars(defense)  # an instance attribute to put back (a test's stand-in)
    original = defense.transform

    def transform(x: torch.Tensor) -> torch.Tensor:
        out = original(x)
        seen.append(out.detach())
        return out

    defense.transform = transform
    try:
        yield seen
    finally:
        if own:
            defense.transform = original
        else:
            del defense.transform


def distances(x: torch.Tensor, x_adv: torch.Tensor, purified: torch.Tensor) -> dict[str, torch.Tensor]:
    """Figure 7(a)'s three L2 distances per example, in ``DISTANCES`` order."""
    x, x_adv, purified = (t.detach().flatten(1).float().cpu() for t in (x, x_adv, purified))
    return {"defend2adv": (purified - x_adv).norm(dim=1), "adv2gt": (x_adv - x).norm(dim=1),
            "defense2gt": (purified - x).norm(dim=1)}


def summary(dist: dict[str, torch.Tensor], adv_correct: torch.Tensor) -> dict[str, Any]:
    """Record fields: each distance per example and its quartiles, the norm, and the classifier's
    accuracy on x_adv (``adv_correct``: one bool per example)."""
    out: dict[str, Any] = {"distance_norm": NORM, ADV_ACC: round(float(adv_correct.float().mean()), 6)}
    q = torch.tensor([0.25, 0.5, 0.75])
    for name in DISTANCES:
        d = dist[name]
        out[per_example_field(name)] = [round(v, 5) for v in d.tolist()]
        for stat, v in zip(STATS, torch.quantile(d.double(), q.double()).tolist()):
            out[f"{name}_{stat}"] = round(v, 6)
    return out


def fields(model: torch.nn.Module, defense: Purifier, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor,
           seen: list[torch.Tensor]) -> dict[str, Any]:
    """The metric's record fields of one cell; ``seen``: the transform outputs ``recording`` kept
    while the cell's adversarial prediction ran (else one extra pass after ``defense.reset()``,
    which a seeded random purifier repeats draw for draw)."""
    purified = torch.cat(seen) if seen else None
    if purified is None or purified.shape != x_adv.shape:
        defense.reset()
        with torch.no_grad():
            purified = torch.cat([defense.transform(x_adv[i : i + defense.batch_size])
                                  for i in range(0, len(x_adv), defense.batch_size)])
    adv_pred = batched_logits(model, x_adv).argmax(1).cpu()
    return summary(distances(x, x_adv, purified), adv_pred == y.cpu())
