"""EOT: expectation over transformation (Athalye et al., ICML 2018) for randomised defenses.

``EOT(pipeline, n)`` evaluates a random pipeline n times and returns the mean logits, so the
gradient an attack takes is the average of the n draws' gradients. Registered as attack ``eot``:
another attack through EOT of BPDA of the bound defense's (random) transform, with the purifier's
declared draw count (``eot_samples``) unless the grid sets ``n``.
"""

from __future__ import annotations

from typing import Any

from attacks.bpda import WrapperAttack
from bench.core.approx import EOT, BPDAModel
from bench.core.contracts import Model, Purifier
from bench.core.errors import BenchError
from bench.core.methods import register_attack as register

__all__ = ["EOT", "EOTAttack"]


@register("eot")
class EOTAttack(WrapperAttack):
    """Another attack (default pgd) through EOT over ``n`` draws of BPDA of the defense's transform.

    ``n`` unset (None): the draws the bound purifier declares (``Purifier.eot_samples``)."""

    def __init__(self, n: int | None = None, **params) -> None:
        super().__init__(**params)
        if n is not None and int(n) < 1:
            raise BenchError(f"EOT needs at least one draw, got n={n}")
        self.n = None if n is None else int(n)

    def eot_draws(self, defense: Any) -> int:
        return self.draws(defense)

    def draws(self, defense: Any = None) -> int:
        """EOT draws per gradient against ``defense`` (default: the bound one): ``n`` when given,
        else the purifier's declared ``eot_samples``."""
        if self.n is not None:
            return self.n
        defense = self.defense if defense is None else defense
        if not isinstance(defense, Purifier):
            raise BenchError(f"{self.registry_name}: set n (EOT draws) in the grid; the defense "
                             f"{type(defense).__name__} declares no eot_samples (it is not a defenses.Purifier)")
        return defense.eot_samples

    def pipeline(self, model: Model) -> Model:
        base = self.defense.model if self.defense is not None else model
        return EOT(BPDAModel(base, self._transform()), self.draws())

    def config(self) -> dict:
        return {**super().config(), "n": self.n}
