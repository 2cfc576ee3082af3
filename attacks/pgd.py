"""PGD with random start and restarts, Linf (Madry et al., ICLR 2018).

Per example we keep the first iterate that succeeds (from the logits the gradient step already
computed, so it costs nothing) and otherwise the final iterate; restarts only re-run the examples
no earlier restart has broken. On the model it runs on this is never weaker than returning the last
iterate; judged elsewhere (transfer, a randomized defense) ``Attack.full_budget`` returns the last. ``perturb``
returns a :class:`Traced`: the attack loss of every iterate a gradient was taken at (restarts one
after another; an example a restart skips repeats its last value) and the first adversarial step
(Pintor et al., NeurIPS 2022, read these).
"""

from __future__ import annotations

import torch

from bench.core.contracts import Attack, Model, Traced, project_linf, uniform_like
from bench.core.methods import register_attack as register


@register("pgd")
class PGD(Attack):
    """Linf PGD: ``steps`` signed-gradient steps of ``step_size`` (default 2.5 eps / steps)."""

    dataset_defaults = {
        "digits": {"eps": 0.3, "steps": 10, "step_size": 0.075},
        "mnist": {"eps": 0.3, "steps": 10, "step_size": 0.075},
        "cifar10": {"eps": 8 / 255, "steps": 10, "step_size": 2 / 255},
    }

    def __init__(self, eps: float = 0.3, steps: int = 10, step_size: float | None = None,
                 random_start: bool = True, restarts: int = 1, **kw) -> None:
        super().__init__(eps=eps, steps=steps, step_size=step_size, random_start=random_start, **kw)
        if int(restarts) < 1:
            from bench.core.errors import BenchError

            raise BenchError(f"restarts must be at least 1, got {restarts}")
        self.restarts = int(restarts)
        if self.step_size is None:
            self.step_size = 2.5 * self.eps / self.steps

    def perturb(self, model: Model, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                gen: torch.Generator) -> Traced:
        best = x.clone()
        todo = torch.arange(len(x), device=x.device)
        rows: list[torch.Tensor] = []
        first = torch.full((len(x),), -1, dtype=torch.long, device=x.device)
        for r in range(self.restarts):
            xs, ys = x[todo], y[todo]
            ts = None if target is None else target[todo]
            adv, done, trace, hit_at = self._run(model, xs, ys, ts, gen)
            best[todo] = adv
            block = (rows[-1][-1:] if rows else torch.zeros(1, len(x), device=x.device)).repeat(self.steps, 1)
            block[:, todo] = trace
            rows.append(block)
            first[todo] = torch.where(hit_at >= 0, hit_at + r * self.steps, first[todo])
            todo = todo[~done]
            if len(todo) == 0:
                break
        return Traced(best, torch.cat(rows), first)

    def _run(self, model: Model, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
             gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(returned points, which succeeded, loss trace (steps, b), first adversarial step or -1)."""
        eps, alpha = self.eps, self.step_size
        x_adv = x.clone()
        if self.random_start:
            x_adv = (x_adv + uniform_like(x, -eps, eps, gen)).clamp_(0.0, 1.0)
        found = x_adv.clone()
        done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        trace = torch.empty(self.steps, len(x), device=x.device)
        hit_at = torch.full((len(x),), -1, dtype=torch.long, device=x.device)
        for t in range(self.steps):
            grad, logits = self.loss_grad(model, x_adv, y, target)
            trace[t] = self.attack_loss(logits, y, target)
            if self.note_success(t, self.is_success(logits, y, target), x_adv, found, done, hit_at):
                # every example already returns an earlier iterate: the rest changes nothing
                trace[t + 1 :] = trace[t]
                break
            x_adv = project_linf(x_adv + alpha * grad.sign(), x, eps)
        last = ~done
        found[last] = x_adv[last]
        if self.restarts > 1 and last.any():  # only restarts need to know whether the last iterate won
            with torch.no_grad():
                done[last] = self.is_success(model(x_adv[last]), y[last], None if target is None else target[last])
        return found, done, trace, hit_at
