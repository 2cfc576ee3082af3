"""FGSM: one signed-gradient step of size eps (Goodfellow, Shlens, Szegedy, ICLR 2015)."""

from __future__ import annotations

import torch

from bench.core.contracts import Attack, Model, Traced, project_linf
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
                gen: torch.Generator) -> Traced:
        """The step's point, except where x itself is already adversarial (then x: the best point on
        the one-step path); the trace is the loss at x."""
        grad, logits = self.loss_grad(model, x, y, target)
        x_adv = project_linf(x + self.eps * grad.sign(), x, self.eps)
        hit = self.is_success(logits, y, target)
        if not self.keep_last:  # full_budget (transfer, randomized defenses): the step's point regardless
            x_adv[hit] = x[hit]
        first = torch.where(hit, 0, -1).long()
        return Traced(x_adv, self.attack_loss(logits, y, target)[None], first)
