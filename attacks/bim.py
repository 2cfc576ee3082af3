"""BIM: the basic iterative method, PGD without the random start (Kurakin, Goodfellow, Bengio, 2017)."""

from __future__ import annotations

from attacks.pgd import PGD
from bench.core.methods import register_attack as register


@register("bim")
class BIM(PGD):
    """Linf iterative FGSM from x itself; step ``eps / 6`` by default (CleverHans' 0.05 at eps 0.3)."""

    dataset_defaults = {
        "digits": {"eps": 0.3, "steps": 10},
        "mnist": {"eps": 0.3, "steps": 10},
        "cifar10": {"eps": 8 / 255, "steps": 10},
    }

    def __init__(self, eps: float = 0.3, steps: int = 10, step_size: float | None = None, **kw) -> None:
        kw.setdefault("random_start", False)
        super().__init__(eps=eps, steps=steps, step_size=step_size if step_size is not None else eps / 6, **kw)
