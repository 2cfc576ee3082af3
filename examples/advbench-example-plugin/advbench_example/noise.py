"""Random sign noise at the corner of the Linf ball: the floor any gradient attack must beat."""

from __future__ import annotations

import torch

from attacks import Attack


class RandomSign(Attack):
    """x + eps * s, s uniform in {-1, +1} per pixel (seeded), clipped to [0, 1]."""

    def __init__(self, eps: float = 0.1, **kw) -> None:
        super().__init__(eps=eps, **kw)

    def perturb(self, model, x: torch.Tensor, y: torch.Tensor, target, gen: torch.Generator) -> torch.Tensor:
        sign = torch.randint(0, 2, x.shape, generator=gen).to(x.device, x.dtype) * 2 - 1
        return (x + self.eps * sign).clamp(0.0, 1.0)
