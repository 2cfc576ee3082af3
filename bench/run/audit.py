"""Audit of the attack contract on every cell: x_adv in [0, 1] and inside the eps ball.

A violation fails the cell; nothing is clipped after the fact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.core.errors import AuditError

#: Slack for float round-off (float32 images near 1.0 have spacing about 6e-8).
TOLERANCE = 1e-5


@dataclass
class AuditReport:
    max_perturbation: float  # in the attack's norm (Linf, L2 or L0), largest over examples
    mean_l2: float
    mean_linf: float
    mean_rho2: float  # mean ||x_adv - x||_2 / ||x||_2 (Deep Defense's rho_2)


def perturbation_norms(x: torch.Tensor, x_adv: torch.Tensor, norm: str) -> torch.Tensor:
    delta = (x_adv - x).flatten(1)
    if norm == "Linf":
        return delta.abs().amax(1)
    if norm == "L2":
        return delta.norm(dim=1)
    if norm == "L0":
        return (delta.abs() > TOLERANCE).sum(1).float()
    raise AuditError(f"cannot audit unknown norm {norm!r}")


def audit(x: torch.Tensor, x_adv: torch.Tensor, norm: str, eps: float | None) -> AuditReport:
    """Check the contract; raise AuditError on violation. ``eps=None``: minimal-norm attack (no ball)."""
    if x_adv.shape != x.shape:
        raise AuditError(f"attack changed the shape: {tuple(x.shape)} -> {tuple(x_adv.shape)}")
    if not torch.isfinite(x_adv).all():
        raise AuditError("attack returned NaN or infinite pixels")
    lo, hi = float(x_adv.min()), float(x_adv.max())
    if lo < -TOLERANCE or hi > 1 + TOLERANCE:
        raise AuditError(f"x_adv leaves [0, 1]: min {lo:.6g}, max {hi:.6g}")
    norms = perturbation_norms(x, x_adv, norm)
    worst = float(norms.max()) if len(norms) else 0.0
    if eps is not None and worst > eps + TOLERANCE * (1 if norm == "Linf" else max(1.0, eps)):
        raise AuditError(f"x_adv leaves the {norm} ball: largest perturbation {worst:.6g} > eps {eps:.6g}")
    delta = (x_adv - x).flatten(1)
    return AuditReport(
        max_perturbation=worst,
        mean_l2=float(delta.norm(dim=1).mean()) if len(delta) else 0.0,
        mean_linf=float(delta.abs().amax(1).mean()) if len(delta) else 0.0,
        mean_rho2=float((delta.norm(dim=1) / x.flatten(1).norm(dim=1).clamp_min(1e-12)).mean()) if len(delta) else 0.0,
    )
