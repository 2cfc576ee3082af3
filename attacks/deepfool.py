"""DeepFool, L2 (Moosavi-Dezfooli, Fawzi, Frossard, CVPR 2016): the minimal perturbation that flips f.

Batched over examples; each iteration takes one backward pass per candidate class. Examples the
model already misclassifies are returned unchanged (norm 0). The harness records each returned
perturbation's L2 norm (Deep Defense's rho_2 = mean ||r|| / ||x||).
"""

from __future__ import annotations

import torch

from bench.core.contracts import Attack, Model, Traced
from bench.core.methods import register_attack as register


@register("deepfool")
class DeepFool(Attack):
    """Minimal-norm L2 attack: linearise the decision boundaries, step to the nearest, repeat."""

    norm = "L2"
    minimal_norm = True
    # Stops at each point's label flip, usually within a few iterations, so ``steps`` is a cap that
    # rarely binds: bench.run.estimate scales its cost by points only.
    work_params = ()

    def __init__(self, steps: int = 50, overshoot: float = 0.02, candidates: int = 10, **kw) -> None:
        kw.pop("eps", None)
        kw.pop("norm", None)
        super().__init__(steps=steps, norm="L2", **kw)
        self.overshoot, self.candidates = float(overshoot), int(candidates)

    def perturb(self, model: Model, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                gen: torch.Generator) -> Traced:
        with torch.no_grad():
            logits0 = model(x)
        k = min(self.candidates, logits0.shape[1])
        # Candidate classes: the true class first, then the k-1 highest other logits at x.
        others = logits0.scatter(1, y[:, None], float("-inf")).topk(k - 1, dim=1).indices
        classes = torch.cat([y[:, None], others], dim=1)
        r_tot = torch.zeros_like(x)
        active = logits0.argmax(1) == y
        # Trace: the margin f_y - max_{k != y} f_k at each iterate (lower is closer to adversarial).
        margin = (logits0.gather(1, y[:, None]).squeeze(1) - logits0.scatter(1, y[:, None], float("-inf")).amax(1))
        rows = [margin.detach().float().cpu()]
        first = torch.where(active, -1, 0).long().cpu()
        for it in range(self.steps):
            if not active.any():
                break
            idx = active.nonzero().squeeze(1)
            xa = (x[idx] + (1 + self.overshoot) * r_tot[idx]).clamp(0, 1).requires_grad_(True)
            logits = model(xa)
            still = logits.argmax(1) == y[idx]
            row = rows[-1].clone()
            ld = logits.detach()
            yi = y[idx][:, None]
            row[idx.cpu()] = (ld.gather(1, yi).squeeze(1) - ld.scatter(1, yi, float("-inf")).amax(1)).float().cpu()
            if it > 0:
                rows.append(row)
            else:
                rows[0] = row
            first[idx[~still].cpu()] = it
            cls = classes[idx]
            f = logits.gather(1, cls)  # (b, k)
            grads = []
            for j in range(k):
                (g,) = torch.autograd.grad(f[:, j].sum(), xa, retain_graph=j < k - 1)
                grads.append(g)
            grads = torch.stack(grads, 1)  # (b, k, C, H, W)
            w = grads[:, 1:] - grads[:, :1]
            fd = (f[:, 1:] - f[:, :1]).detach()
            wn = w.flatten(2).norm(dim=2).clamp_min(1e-8)
            ratio = fd.abs() / wn
            best = ratio.argmin(1)
            ar = torch.arange(len(idx), device=x.device)
            step = ((ratio[ar, best] + 1e-4) / wn[ar, best]).view(-1, 1, 1, 1) * w[ar, best]
            step = step * still.view(-1, 1, 1, 1)
            r_tot[idx] += step.detach()
            active[idx[~still]] = False
        # The returned point is the first iterate found adversarial (its label flip ends the loop).
        return Traced((x + (1 + self.overshoot) * r_tot).clamp(0, 1), loss_trace=torch.stack(rows),
                      first_success=first)
