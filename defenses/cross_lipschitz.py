"""Cross-Lipschitz regularization (Hein & Andriushchenko, NeurIPS 2017).

Omega = 1/(n K^2) sum_i sum_{l,m} ||grad f_l(x_i) - grad f_m(x_i)||^2 on the logits, computed with
the identity sum_{l,m} ||g_l - g_m||^2 = 2K ||J||_F^2 - 2 ||sum_l g_l||^2 (K + 1 backward passes).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench.core.contracts import EpochCallback, TrainDefense
from bench.core.data import Dataset
from bench.core.methods import register_defense as register
from defenses.regularizers import cross_lipschitz
from defenses.training import fit


@register("cross-lipschitz")
class CrossLipschitz(TrainDefense):
    """CE + lambda * Omega (RMC supplement: lambda 0.05 for MNIST and CIFAR-10)."""

    dataset_defaults = {
        "digits": {"weight": 0.05, "epochs": 30, "lr": 1e-3},
        "mnist": {"weight": 0.05, "epochs": 10, "lr": 1e-3},
        "cifar10": {"weight": 0.05, "epochs": 100, "lr": 1e-4},
    }

    def __init__(self, weight: float = 0.05, epochs: int = 10, lr: float = 1e-3, batch_size: int = 128,
                 seed: int = 0) -> None:
        self.weight = float(weight)
        self.epochs, self.lr, self.batch_size, self.seed = int(epochs), float(lr), int(batch_size), int(seed)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.clone().requires_grad_(True)
        logits = model(x)
        return F.cross_entropy(logits, y) + self.weight * cross_lipschitz(logits, x).mean(), logits

    def train(self, model: nn.Module, train_set: Dataset, *, device: torch.device | str = "cpu",
              callback: EpochCallback | None = None, resume_dir: Any = None) -> nn.Module:
        return fit(model, train_set, self.loss, epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                   seed=self.seed, device=device, callback=callback, resume_dir=resume_dir, desc="cross-lipschitz")
