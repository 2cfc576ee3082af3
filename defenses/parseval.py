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

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench.data import Dataset
from defenses.base import EpochCallback, TrainDefense
from defenses.registry import register
from defenses.training import fit


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
class Parseval(TrainDefense):
    """Fine-tune with the Parseval retraction after every step (SGD, Deep Defense's Table 3 schedule)."""

    dataset_defaults = {
        "digits": {"epochs": 10, "lr": 5e-3, "pretrain_epochs": 30, "pretrain_lr": 1e-3},
        "mnist": {"epochs": 5, "pretrain_epochs": 10, "pretrain_lr": 1e-3},
        "cifar10": {"epochs": 50, "pretrain_epochs": 100, "pretrain_lr": 1e-4},
    }

    def __init__(self, beta: float = 3e-4, epochs: int = 5, lr: float = 5e-4, momentum: float = 0.9,
                 weight_decay: float = 5e-4, batch_size: int = 100, pretrain_epochs: int = 0,
                 pretrain_lr: float = 1e-3, pretrain_batch_size: int = 128, seed: int = 0) -> None:
        self.beta, self.epochs, self.lr, self.momentum = float(beta), int(epochs), float(lr), float(momentum)
        self.weight_decay, self.batch_size = float(weight_decay), int(batch_size)
        self.pretrain_epochs, self.pretrain_lr = int(pretrain_epochs), float(pretrain_lr)
        self.pretrain_batch_size, self.seed = int(pretrain_batch_size), int(seed)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # The retraction of the previous step's weights runs here, before this step's forward pass
        # (fit owns the optimizer loop); train() applies the last one after the final step.
        parseval_retraction(model, self.beta)
        logits = model(x)
        return F.cross_entropy(logits, y), logits

    def train(self, model: nn.Module, train_set: Dataset, *, device: torch.device | str = "cpu",
              callback: EpochCallback | None = None, resume_dir: Any = None) -> nn.Module:
        if self.pretrain_epochs > 0:
            pre_dir = None if resume_dir is None else Path(resume_dir) / "pretrain"
            model = fit(model, train_set, epochs=self.pretrain_epochs, lr=self.pretrain_lr,
                        batch_size=self.pretrain_batch_size, seed=self.seed, device=device, resume_dir=pre_dir,
                        desc="parseval pretrain")
        model = fit(model, train_set, self.loss, epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                    optimizer="sgd", momentum=self.momentum, weight_decay=self.weight_decay, seed=self.seed + 1,
                    device=device, callback=callback, resume_dir=resume_dir, desc="parseval", bn_eval=True)
        parseval_retraction(model, self.beta)
        return model.eval()
