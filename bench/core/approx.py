"""Differentiable stand-ins for purifying pipelines: BPDA and EOT (Athalye, Carlini and Wagner,
ICML 2018).

``bpda(transform, substitute=None)``: forward runs the real (possibly non-differentiable) transform,
backward is the identity or the gradient of a differentiable ``substitute``. ``BPDAModel(model,
transform)`` is the pipeline x -> model(t(x)) that gradient attacks differentiate. ``EOT(pipeline, n)``
averages the logits of ``n`` draws of a random pipeline. They live in the foundation because both sides
use them: purifying defenses build their attack surface from them and the ``bpda`` / ``eot`` attacks
wrap a defense's transform in them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from bench.core.errors import BenchError

Model = Callable[[torch.Tensor], torch.Tensor]
Transform = Callable[[torch.Tensor], torch.Tensor]


def bpda(transform: Transform, substitute: Transform | None = None) -> Transform:
    """Forward: ``transform(x)``. Backward: identity, or d substitute / dx (straight-through trick)."""

    def f(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = transform(x.detach())
        base = x if substitute is None else substitute(x)
        return base + (out - base).detach()

    return f


class BPDAModel(nn.Module):
    """model(transform(x)) with the transform's gradient approximated by BPDA."""

    def __init__(self, model: Model, transform: Transform, substitute: Transform | None = None) -> None:
        super().__init__()
        self.model, self.approx = model, bpda(transform, substitute)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.approx(x))


class EOT(nn.Module):
    """Mean logits over ``n`` draws of a random pipeline (one batch of n x B inputs)."""

    def __init__(self, pipeline: Model, n: int = 8) -> None:
        super().__init__()
        if int(n) < 1:
            raise BenchError(f"EOT needs at least one draw, got n={n}")
        self.pipeline, self.n = pipeline, int(n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reps = self.pipeline(x.repeat(self.n, *([1] * (x.dim() - 1))))
        return reps.view(self.n, len(x), -1).mean(0)
