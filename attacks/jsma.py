"""JSMA: the Jacobian-based saliency map attack, targeted, L0 (Papernot et al., EuroS&P 2016).

Each iteration picks the pair of input features (p, q) with the largest saliency
``(a_p + a_q) * |b_p + b_q|`` among pairs where the target logit's gradient sum a > 0 and the other
logits' gradient sum b < 0, and sets both to 1 (theta = +1, "increasing" variant); at most a
``gamma`` fraction of the features is changed. Pairs are scored for a whole batch at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from bench.core.contracts import Attack, Model, random_wrong_class
from bench.core.methods import register_attack as register


@register("jsma")
class JSMA(Attack):
    """Targeted saliency-map attack changing at most ``gamma`` of the features (norm reported: L0)."""

    norm = "L0"
    minimal_norm = True
    capped = True  # by gamma
    # gamma 0.1 is the paper's (MNIST: 39 pixel pairs); 8x8 digits have 64 features, so allow 30%.
    dataset_defaults = {"digits": {"gamma": 0.3}}

    def __init__(self, gamma: float = 0.1, theta: float = 1.0, targeted: bool = True, max_iters: int | None = None,
                 compact: bool = True, **kw) -> None:
        kw.pop("eps", None)
        kw.pop("norm", None)
        kw.setdefault("batch_size", 32)
        super().__init__(norm="L0", targeted=targeted, **kw)
        self.gamma, self.theta = float(gamma), float(theta)
        #: Optional cap on the pixel-pair iterations (default: gamma's budget, gamma x features / 2).
        self.max_iters = None if max_iters is None else int(max_iters)
        #: Run only the rows still short of their target (same results; False: the whole batch every
        #: iteration, kept for ``bench.benchmarks.cw_jsma``'s before/after comparison).
        self._compact = bool(compact)  # not in config(): it never changes the output

    def unbounded(self, shape: Sequence[int]) -> JSMA:
        """JSMA's budget is gamma, the share of features it may change: unbounded, it may change all."""
        free = super().unbounded(shape)
        free.gamma, free.max_iters = 1.0, None
        return free

    def perturb(self, model: Model, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                gen: torch.Generator) -> torch.Tensor:
        if target is None:  # untargeted use: aim at a random wrong class
            with torch.no_grad():
                target = random_wrong_class(y, model(x[:1]).shape[1], gen).to(x.device)
        n, shape = len(x), x.shape[1:]
        nf = x[0].numel()
        x_adv = x.clone().flatten(1)
        domain = x_adv < 1.0 if self.theta > 0 else x_adv > 0.0
        max_iters = int(nf * self.gamma / 2)
        if self.max_iters is not None:
            max_iters = min(max_iters, self.max_iters)
        # Only rows still short of their target go through the model (``compact``): a row that reached
        # its target, or found no valid pair, never changes again (its pixels and domain stay put), so
        # dropping it leaves every row's result as in the full batch and saves its forward and two
        # backward passes; on CIFAR-10 most rows finish in a fraction of gamma's budget. (Through a
        # randomized model a row stops at the first draw that gives its target, like the other attacks'
        # first adversarial iterate.)
        live = torch.arange(n, device=x.device)
        for _ in range(max_iters):
            xa = x_adv[live].view(len(live), *shape).clone().requires_grad_(True)
            logits = model(xa)
            tl = target[live]
            keep = (logits.argmax(1) != tl) & (domain[live].sum(1) >= 2)
            if not keep.any():
                break
            t_logit = logits.gather(1, tl[:, None]).sum()
            (g_t,) = torch.autograd.grad(t_logit, xa, retain_graph=True)
            (g_all,) = torch.autograd.grad(logits.sum(), xa)
            a = g_t.flatten(1)
            b = g_all.flatten(1) - a
            if self._compact and not keep.all():
                live, a, b = live[keep], a[keep], b[keep]
                keep = keep[keep]
            p, q, has = best_pairs(a, b, domain[live])
            has = has & keep
            for idx in (p, q):
                vals = (x_adv[live, idx] + self.theta).clamp(0, 1)
                x_adv[live, idx] = torch.where(has, vals, x_adv[live, idx])
                domain[live, idx] = domain[live, idx] & ~has
            if not has.any():
                break
            if self._compact:
                live = live[has]
        return x_adv.view(n, *shape).detach()


#: Rows of the pair-score matrix scored at a time (rows x features floats per block).
PAIR_ROWS = 256


def best_pairs(a: torch.Tensor, b: torch.Tensor,
               domain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row, the pair p != q of in-domain features maximising ``(a_p + a_q) * |b_p + b_q|`` with
    ``a_p + a_q > 0`` and ``b_p + b_q < 0``; returns (p, q, has_valid_pair).

    Exact without scoring all nf^2 pairs (9.4M per CIFAR-10 image, gigabytes per batch): row p's
    scores are bounded by ``relu(a_p + max a) * relu(-b_p - min b)``, so rows are scored in blocks in
    decreasing order of that bound until the bound falls to the best score found."""
    n, nf = a.shape
    # -inf on out-of-domain features makes every pair touching them score 0 after the clamps below.
    a = a.masked_fill(~domain, float("-inf"))
    b = b.masked_fill(~domain, 0.0)
    best_p = torch.zeros(n, dtype=torch.long, device=a.device)
    best_q = torch.zeros(n, dtype=torch.long, device=a.device)
    has = torch.zeros(n, dtype=torch.bool, device=a.device)
    for i in range(n):
        ai, bi, di = a[i], b[i], domain[i]
        if int(di.sum()) < 2:
            continue
        amax, bmin = ai.max(), bi.masked_fill(~di, float("inf")).min()
        bound = (ai + amax).clamp_(min=0) * (-(bi + bmin)).clamp_(min=0)
        bound, order = bound.sort(descending=True)
        best = torch.zeros((), dtype=a.dtype, device=a.device)
        for start in range(0, nf, PAIR_ROWS):
            if bound[start] <= best:
                break
            rows = order[start:start + PAIR_ROWS]
            score = (ai[rows, None] + ai[None, :]).clamp_(min=0)
            score.mul_((-(bi[rows, None] + bi[None, :])).clamp_(min=0))
            score[torch.arange(len(rows), device=a.device), rows] = 0.0  # p == q is not a pair
            val, flat = score.flatten().max(0)
            if val > best:
                best = val
                best_p[i], best_q[i] = rows[flat // nf], flat % nf
        has[i] = best > 0
    return best_p, best_q, has
