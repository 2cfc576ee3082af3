"""Input-gradient quantities shared by the Jacobian and Cross-Lipschitz regularizers.

All are differentiable (``create_graph=True``) so their gradient reaches the weights.
"""

from __future__ import annotations

import torch


def class_gradients(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Exact input gradients of every logit: (B, K, *x.shape[1:]), one backward pass per class."""
    grads = [torch.autograd.grad(logits[:, k].sum(), x, create_graph=True)[0] for k in range(logits.shape[1])]
    return torch.stack(grads, 1)


def jacobian_frobenius_sq(logits: torch.Tensor, x: torch.Tensor, projections: int = 0,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-example ||d logits / d x||_F^2.

    ``projections=0``: exact (K backward passes). ``projections=P``: the unbiased random-projection
    estimate C/P sum_p ||v_p^T J||^2 with v_p uniform on the unit sphere of R^C (Hoffman et al. 2019),
    P backward passes.
    """
    if projections <= 0:
        return class_gradients(logits, x).flatten(2).pow(2).sum((1, 2))
    c = logits.shape[1]
    total = torch.zeros(len(x), device=x.device)
    for _ in range(projections):
        v = torch.randn(logits.shape, generator=generator).to(logits.device)
        v = v / v.norm(dim=1, keepdim=True)
        (g,) = torch.autograd.grad((logits * v).sum(), x, create_graph=True)
        total = total + g.flatten(1).pow(2).sum(1)
    return total * c / projections


def cross_lipschitz(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-example (1/K^2) sum_{l,m} ||g_l - g_m||^2 via 2K ||J||_F^2 - 2 ||sum_l g_l||^2 (Hein & Andriushchenko)."""
    k = logits.shape[1]
    frob = jacobian_frobenius_sq(logits, x)
    (g_sum,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
    return (2 * k * frob - 2 * g_sum.flatten(1).pow(2).sum(1)) / k**2
