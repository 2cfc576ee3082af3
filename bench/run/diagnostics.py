"""Per-cell measurements the reliability flags read (bench.report.flags): the share of zero input gradients."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from bench.core.errors import BenchError


def zero_grad_fraction(model: Any, x: Any, y: Any, max_n: int = 64) -> float:
    """Share of (up to ``max_n``) examples whose cross-entropy input gradient is exactly zero.

    Also refuses non-finite logits (raises), so a diverged model fails its cell loudly."""
    x = x[:max_n].clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        if not torch.isfinite(logits).all():
            raise BenchError("non-finite logits (NaN or inf) from the attacked model")
        loss = F.cross_entropy(logits, y[:max_n].to(logits.device), reduction="sum")
        if not loss.requires_grad:  # no gradient path to the input at all
            return 1.0
        (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
    if grad is None:
        return 1.0
    return float((grad.flatten(1).abs().amax(1) == 0).float().mean())
