"""FGSM: one signed-gradient step of size eps (Goodfellow, Shlens, Szegedy, ICLR 2015)."""

from __future__ import annotations

import torch

from bench.core.contracts import Attack, Model, project_linf
from bench.core.methods import register_attack as register


@register("fgsm")
class FGSM(Attack):
    """x_adv = clip(x + eps * sign(grad_x loss)); Linf. Targeted mode steps down the target's loss."""

    dataset_defaults = {"digits": {"eps": 0.3}, "mnist": {"eps": 0.3}, "cifar10": {"eps": 8 / 255}}
    work_params = ()  # one gradient step, whatever the budgets (read by bench.run.estimate)

    def __init__(self, eps: float = 0.3, **kw) -> None:
        kw.setdefault("steps", 1)
        super().__init__(eps=eps, **kw)

    def perturb(self, model: Model, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                gen: torch.Generator) -> torch.Tensor:
        grad, _ = self.loss_grad(model, x, y, target)
        return project_linf(x + self.eps * grad.sign(), x, self.eps)
