"""BPDA: backward-pass differentiable approximation (Athalye, Carlini, Wagner, ICML 2018).

``bpda(transform, substitute=None)`` returns a differentiable function whose forward runs the real
(possibly non-differentiable) transform and whose backward is the identity, or the gradient of a
differentiable ``substitute``. ``BPDAModel(model, transform)`` is the pipeline x -> model(t(x)) that
gradient attacks differentiate. Registered as attack ``bpda``: a wrapper that runs another attack
(``attack="pgd"`` by default) through BPDA of the bound defense's ``transform``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from attacks.base import Attack, Model
from attacks.registry import ATTACKS, register
from bench.core.errors import BenchError

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


class WrapperAttack(Attack):
    """Runs an inner attack against a pipeline the wrapper builds from the bound defense."""

    needs_defense = True
    applies_to = ("median", "tvm", "ride")  # runtime defenses with a transform to approximate

    def __init__(self, attack: str = "pgd", **params: Any) -> None:
        if attack in ("bpda", "eot"):
            raise BenchError("bpda / eot wrap a gradient attack such as pgd, not another wrapper")
        self.inner_name = attack
        self.inner = ATTACKS.create(attack, **params)
        self.norm = self.inner.norm
        self.eps = self.inner.eps
        self.minimal_norm = self.inner.minimal_norm
        self.seed, self.targeted, self.batch_size = self.inner.seed, self.inner.targeted, self.inner.batch_size
        self.steps, self.step_size, self.random_start = self.inner.steps, self.inner.step_size, self.inner.random_start
        self.last_target = None
        self.defense = None

    def pipeline(self, model: Model) -> Model:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, model: Model, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None):
        out = self.inner(self.pipeline(model), x, y, target)
        self.last_target = self.inner.last_target
        return out

    def _transform(self) -> Transform:
        if self.defense is None or not hasattr(self.defense, "transform"):
            raise BenchError(f"{self.registry_name} needs a purifying runtime defense (median, tvm, ride); "
                             "use threat = \"adaptive\" with one")
        return self.defense.transform

    def config(self) -> dict:
        return {"attack": self.inner_name, **self.inner.config()}


@register("bpda")
class BPDAAttack(WrapperAttack):
    """Another attack (default pgd) through BPDA (identity backward) of the defense's transform."""

    def pipeline(self, model: Model) -> Model:
        return BPDAModel(self.defense.model if self.defense is not None else model, self._transform())
