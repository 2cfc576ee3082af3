"""L2 PGD with a random start in the L2 ball (Madry et al., ICLR 2018)."""

from __future__ import annotations

import torch

from bench.core.contracts import Attack, Model, Traced, project_l2
from bench.core.methods import register_attack as register


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (v.dim() - 1)))


@register("pgd-l2")
class PGDL2(Attack):
    """L2 PGD: steps along the normalised gradient, projected onto the L2 ball of radius eps."""

    norm = "L2"
    dataset_defaults = {"digits": {"eps": 1.0}, "mnist": {"eps": 2.0}, "cifar10": {"eps": 0.5}}

    def __init__(self, eps: float = 1.0, steps: int = 10, step_size: float | None = None,
                 random_start: bool = True, **kw) -> None:
        kw.pop("norm", None)
        super().__init__(eps=eps, norm="L2", steps=steps, step_size=step_size, random_start=random_start, **kw)
        if self.step_size is None:
            self.step_size = 2.5 * self.eps / self.steps

    def perturb(self, model: Model, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                gen: torch.Generator) -> Traced:
        """The first adversarial iterate per example (else, or with ``keep_last``, the last), and the loss trace."""
        x_adv = x.clone()
        if self.random_start:
            noise = torch.randn(x.shape, generator=gen).to(x.device, x.dtype)
            radius = torch.rand(len(x), generator=gen).to(x.device).view(-1, 1, 1, 1) * self.eps
            x_adv = project_l2(x + _unit(noise) * radius, x, self.eps)
        found = x_adv.clone()
        done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        trace = torch.empty(self.steps, len(x), device=x.device)
        first = torch.full((len(x),), -1, dtype=torch.long, device=x.device)
        for t in range(self.steps):
            grad, logits = self.loss_grad(model, x_adv, y, target)
            trace[t] = self.attack_loss(logits, y, target)
            if self.note_success(t, self.is_success(logits, y, target), x_adv, found, done, first):
                # every example already returns an earlier iterate: the rest changes nothing
                trace[t + 1 :] = trace[t]
                break
            x_adv = project_l2(x_adv + self.step_size * _unit(grad), x, self.eps)
        found[~done] = x_adv[~done]
        return Traced(found, trace, first)
