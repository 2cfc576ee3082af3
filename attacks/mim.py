"""MIM: momentum iterative FGSM (Dong et al., "Boosting adversarial attacks with momentum", CVPR 2018)."""

from __future__ import annotations

import torch

from bench.core.contracts import Attack, Model, Traced, project_linf
from bench.core.methods import register_attack as register


@register("mim")
class MIM(Attack):
    """g <- mu g + grad / ||grad||_1; x <- Proj(x + alpha sign(g)); alpha = eps / steps, mu = 1."""

    dataset_defaults = {"digits": {"eps": 0.3}, "mnist": {"eps": 0.3}, "cifar10": {"eps": 8 / 255}}

    def __init__(self, eps: float = 0.3, steps: int = 10, step_size: float | None = None, decay: float = 1.0,
                 **kw) -> None:
        super().__init__(eps=eps, steps=steps, step_size=step_size, **kw)
        self.decay = float(decay)
        if self.step_size is None:
            self.step_size = self.eps / self.steps

    def perturb(self, model: Model, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                gen: torch.Generator) -> Traced:
        """The first adversarial iterate per example (else, or with ``keep_last``, the last), and the loss trace."""
        x_adv, g = x.clone(), torch.zeros_like(x)
        found = x.clone()
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
            l1 = grad.abs().flatten(1).sum(1).clamp_min(1e-12).view(-1, 1, 1, 1)
            g = self.decay * g + grad / l1
            x_adv = project_linf(x_adv + self.step_size * g.sign(), x, self.eps)
        found[~done] = x_adv[~done]
        return Traced(found, trace, first)
