"""BPDA: backward-pass differentiable approximation (Athalye, Carlini, Wagner, ICML 2018).

Registered as attack ``bpda``: a wrapper that runs another attack (``attack="pgd"`` by default)
through BPDA of the bound defense's ``transform``. It pairs with every ``defenses.Purifier`` (median,
tvm, ride and purifiers from plugins). The primitives ``bpda`` and ``BPDAModel`` live in
``bench.core.approx`` and are re-exported here.
"""

from __future__ import annotations

from typing import Any

import torch

from bench.core.approx import BPDAModel, Transform, bpda
from bench.core.contracts import Attack, AttackResult, Model, Purifier
from bench.core.errors import BenchError
from bench.core.methods import ATTACKS
from bench.core.methods import register_attack as register

__all__ = ["BPDAAttack", "BPDAModel", "Transform", "WrapperAttack", "bpda", "wrapped_attack"]


class WrapperAttack(Attack):
    """Runs an inner attack against a pipeline the wrapper builds from the bound defense."""

    needs_defense = True
    applies_to = (Purifier,)  # runtime defenses with a transform to approximate, plugins included

    def __init__(self, attack: str = "pgd", **params: Any) -> None:
        if attack in ("bpda", "eot"):
            raise BenchError("bpda / eot wrap a gradient attack such as pgd, not another wrapper")
        self.inner_name = attack
        self.inner = ATTACKS.create(attack, **params)
        self.norm = self.inner.norm
        self.eps = self.inner.eps
        self.minimal_norm, self.capped = self.inner.minimal_norm, self.inner.capped
        self.seed, self.targeted, self.batch_size = self.inner.seed, self.inner.targeted, self.inner.batch_size
        self.steps, self.step_size, self.random_start = self.inner.steps, self.inner.step_size, self.inner.random_start
        self.defense = None

    def pipeline(self, model: Model) -> Model:  # pragma: no cover - abstract
        raise NotImplementedError

    def run(self, model: Model, x: torch.Tensor, y: torch.Tensor,
            target: torch.Tensor | None = None) -> AttackResult:
        return self.inner.run(self.pipeline(model), x, y, target)

    def _transform(self) -> Transform:
        if self.defense is None or not hasattr(self.defense, "transform"):  # duck-typed use from Python works
            raise BenchError(f"{self.registry_name} needs a purifying runtime defense (a defenses.Purifier: "
                             "median, tvm, ride or a plugin's); use threat = \"adaptive\" with one")
        return self.defense.transform

    def config(self) -> dict:
        return {"attack": self.inner_name, **self.inner.config()}


def wrapped_attack(factory: Any, params: dict[str, Any]) -> Any:
    """The registered class of the attack a wrapper (bpda / eot) runs with ``params`` (its ``attack``,
    default pgd); None when ``factory`` is no wrapper or names an unknown attack."""
    if not (isinstance(factory, type) and issubclass(factory, WrapperAttack)):
        return None
    name = params.get("attack", "pgd")
    return ATTACKS.get(name) if isinstance(name, str) and name in ATTACKS else None


@register("bpda")
class BPDAAttack(WrapperAttack):
    """Another attack (default pgd) through BPDA (identity backward) of the defense's transform."""

    def eot_draws(self, defense: Any) -> int:
        """One draw of a random transform per gradient: BPDA alone is no EOT (Athalye et al. 2018
        combine the two for randomized defenses; use ``eot`` for that)."""
        return 1

    def pipeline(self, model: Model) -> Model:
        return BPDAModel(self.defense.model if self.defense is not None else model, self._transform())
