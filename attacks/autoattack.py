"""AutoAttack (Croce & Hein, ICML 2020) through pyautoattack: ``standard`` and ``rand`` versions.

The budget is settable so CI can run a cheap version: ``attacks`` (a subset, runs version
'custom'), ``n_iter`` (APGD iterations), ``n_restarts``, ``n_queries`` (Square).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from bench.core.compat import import_autoattack
from bench.core.contracts import Attack, Model
from bench.core.errors import BenchError
from bench.core.methods import register_attack as register

VERSIONS = ("standard", "rand", "plus")


class _AsModule(nn.Module):
    def __init__(self, fn: Model) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


@register("autoattack")
class AutoAttack(Attack):
    """Parameter-free ensemble (APGD-CE, APGD-T, FAB-T, Square); ``rand`` adds EOT for random defenses."""

    dataset_defaults = {"digits": {"eps": 0.3}, "mnist": {"eps": 0.3}, "cifar10": {"eps": 8 / 255}}
    # APGD's iterations and restarts dominate; Square's queries go only to points APGD left robust
    # (read by bench.run.estimate).
    work_params = ("n_iter", "n_restarts")

    def __init__(self, eps: float = 0.3, norm: str = "Linf", version: str = "standard",
                 attacks: list[str] | None = None, n_iter: int | None = None, n_restarts: int | None = None,
                 n_queries: int | None = None, **kw) -> None:
        if norm not in ("Linf", "L2"):
            raise BenchError(f"autoattack supports norm Linf or L2 here, got {norm!r}")
        super().__init__(eps=eps, norm=norm, **kw)
        if version not in VERSIONS:
            raise BenchError(f"unknown autoattack version {version!r}; use one of {', '.join(VERSIONS)}")
        self.version = version
        self.attacks = list(attacks) if attacks else None
        self.n_iter, self.n_restarts, self.n_queries = n_iter, n_restarts, n_queries

    def config(self) -> dict:
        cfg = super().config()
        cfg["attacks"] = ",".join(self.attacks) if self.attacks else None
        return cfg

    def perturb(self, model: Model, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                gen: torch.Generator) -> torch.Tensor:
        aa_mod = import_autoattack()
        logging.getLogger("auto-attack").setLevel(logging.WARNING)
        net = model if isinstance(model, nn.Module) else _AsModule(model)
        version = "custom" if self.attacks else self.version
        aa = aa_mod.AutoAttack(net, attacks=self.attacks, eps=self.eps, norm=self.norm, version=version,
                               device=x.device, seed=self.seed)
        aa.verbose = False
        for sub in (aa.apgd, aa.apgd_targeted, aa.fab):
            if self.n_iter is not None:
                sub.n_iter = int(self.n_iter)
            if self.n_restarts is not None:
                sub.n_restarts = int(self.n_restarts)
        if self.n_queries is not None:
            aa.square.n_queries = int(self.n_queries)
        x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=self.batch_size)
        # pyautoattack works in float; keep the contract exact against round-off at the ball's edge.
        return torch.min(torch.max(x_adv.to(x.device), x - self.eps), x + self.eps).clamp(0, 1) \
            if self.norm == "Linf" else x_adv.to(x.device).clamp(0, 1)
