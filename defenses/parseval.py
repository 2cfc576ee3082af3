"""Parseval networks (Cisse, Bojanowski, Grave, Dauphin, Usunier, ICML 2017): "Par. Train" of Deep
Defense's supplement Table 2.

After every SGD step each weight matrix W (a convolution's kernel unfolded to c_out x (c_in k k))
is pulled towards the Parseval-tight (orthonormal) manifold by the retraction
W <- (1 + beta) W - beta W W^T W (paper eq. 7; beta = 3e-4 as in the paper). Aggregation layers
(residual sums) become convex combinations in the paper; the Table 4 networks have none, and a
model that exposes ``parseval_aggregation`` weights gets them clamped to [0, 1] after each step.
Like Deep Defense it fine-tunes a standard model (``pretrain_epochs`` of standard training first).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench.core.contracts import EpochCallback
from bench.core.data import Dataset
from bench.core.methods import register_defense as register
from defenses.finetune import FineTune


@torch.no_grad()
def parseval_retraction(model: nn.Module, beta: float = 3e-4) -> None:
    """One retraction step on every Linear / Conv weight, in place (Cisse et al. 2017, eq. 7)."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            w = m.weight.view(m.weight.shape[0], -1)
            w.copy_((1 + beta) * w - beta * (w @ w.t() @ w))
        agg = getattr(m, "parseval_aggregation", None)
        if isinstance(agg, torch.Tensor):
            agg.clamp_(0, 1)


@register("parseval")
class Parseval(FineTune):
    """Fine-tune with the Parseval retraction after every step (SGD, Deep Defense's Table 3 schedule)."""

    def __init__(self, beta: float = 3e-4, **kw: Any) -> None:
        super().__init__(**kw)
        self.beta = float(beta)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # The retraction of the previous step's weights runs here, before this step's forward pass
        # (fit owns the optimizer loop); train() applies the last one after the final step.
        parseval_retraction(model, self.beta)
        logits = model(x)
        return F.cross_entropy(logits, y), logits

    def train(self, model: nn.Module, train_set: Dataset, *, device: torch.device | str = "cpu",
              callback: EpochCallback | None = None, resume_dir: Any = None) -> nn.Module:
        model = super().train(model, train_set, device=device, callback=callback, resume_dir=resume_dir)
        parseval_retraction(model, self.beta)
        return model.eval()
