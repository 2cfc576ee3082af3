"""Deep Defense (Yan, Guo, Zhang, NeurIPS 2018): fine-tuning with an unrolled DeepFool regularizer.

Loss = CE + (1/B) sum_i R_i with r_i the DeepFool perturbation of x_i, unrolled and differentiable
(``create_graph=True``), and R_i = lambda exp(-c ||r_i|| / ||x_i||) for correctly classified x_i,
lambda exp(d ||r_i|| / ||x_i||) otherwise. Defaults from the supplement's Table 3: lambda 15, c 25,
d 5, at most 5 DeepFool iterations, overshoot 0.02, SGD lr 5e-4, momentum 0.9, weight decay 5e-4,
BatchNorm in eval mode. It fine-tunes a standard model: ``pretrain_epochs`` of standard training
run first when the model given is untrained.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench.data import Dataset
from defenses.base import EpochCallback, TrainDefense
from defenses.registry import register
from defenses.training import fit


def differentiable_deepfool(model: nn.Module, x: torch.Tensor, iterations: int = 5, overshoot: float = 0.02,
                            create_graph: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Unrolled L2 DeepFool from the model's own prediction: (r, logits at x).

    The graph through every iteration is kept, so d||r||/d(weights) exists. An example stops
    moving once its prediction has changed.
    """
    x = x.detach().clone().requires_grad_(True)
    logits0 = model(x)
    label = logits0.argmax(1).detach()
    r = torch.zeros_like(x)
    active = torch.ones(len(x), dtype=torch.bool, device=x.device)
    for it in range(iterations):
        xi = x + (1 + overshoot) * r
        logits = logits0 if it == 0 else model(xi)
        active = active & (logits.argmax(1) == label)
        if not active.any():
            break
        f = logits - logits.gather(1, label[:, None])  # f_k - f_label, zero at the label
        grads = torch.stack([torch.autograd.grad(f[:, k].sum(), xi if it else x, create_graph=create_graph)[0]
                             for k in range(f.shape[1])], 1)
        wn = grads.flatten(2).norm(dim=2) + 1e-8
        ratio = f.abs() / wn
        ratio = ratio.scatter(1, label[:, None], float("inf"))
        best = ratio.detach().argmin(1)
        ar = torch.arange(len(x), device=x.device)
        w = grads[ar, best]
        step = ((ratio[ar, best] + 1e-4) / wn[ar, best]).view(-1, *([1] * (x.dim() - 1))) * w
        r = r + step * active.view(-1, *([1] * (x.dim() - 1)))
    return (1 + overshoot) * r, logits0


@register("deep-defense")
class DeepDefense(TrainDefense):
    """Fine-tune with the DeepFool-norm regularizer (supplement Table 3 defaults)."""

    dataset_defaults = {
        # digits (our choice): 10 epochs at lr 5e-3; the paper's lr 5e-4 barely moves in a few epochs.
        "digits": {"epochs": 10, "lr": 5e-3, "pretrain_epochs": 30, "pretrain_lr": 1e-3},
        "mnist": {"epochs": 5, "pretrain_epochs": 10, "pretrain_lr": 1e-3},
        "cifar10": {"epochs": 50, "pretrain_epochs": 100, "pretrain_lr": 1e-4},
    }

    def __init__(self, weight: float = 15.0, c: float = 25.0, d: float = 5.0, iterations: int = 5,
                 overshoot: float = 0.02, epochs: int = 5, lr: float = 5e-4, momentum: float = 0.9,
                 weight_decay: float = 5e-4, batch_size: int = 128, pretrain_epochs: int = 0,
                 pretrain_lr: float = 1e-3, seed: int = 0) -> None:
        self.weight, self.c, self.d = float(weight), float(c), float(d)
        self.iterations, self.overshoot = int(iterations), float(overshoot)
        self.epochs, self.lr, self.momentum = int(epochs), float(lr), float(momentum)
        self.weight_decay, self.batch_size = float(weight_decay), int(batch_size)
        self.pretrain_epochs, self.pretrain_lr, self.seed = int(pretrain_epochs), float(pretrain_lr), int(seed)

    def regularizer(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example R_i and the clean logits."""
        r, logits = differentiable_deepfool(model, x, self.iterations, self.overshoot)
        rho = r.flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1).clamp_min(1e-8)
        correct = (logits.argmax(1) == y).detach()
        reg = torch.where(correct, torch.exp(-self.c * rho), torch.exp(self.d * rho))
        return self.weight * reg, logits

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        reg, logits = self.regularizer(model, x, y)
        return F.cross_entropy(logits, y) + reg.mean(), logits

    def train(self, model: nn.Module, train_set: Dataset, *, device: torch.device | str = "cpu",
              callback: EpochCallback | None = None, resume_dir: Any = None) -> nn.Module:
        if self.pretrain_epochs > 0:
            from pathlib import Path

            pre_dir = None if resume_dir is None else Path(resume_dir) / "pretrain"
            model = fit(model, train_set, epochs=self.pretrain_epochs, lr=self.pretrain_lr,
                        batch_size=self.batch_size, seed=self.seed, device=device, resume_dir=pre_dir,
                        desc="deep-defense pretrain")
        return fit(model, train_set, self.loss, epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                   optimizer="sgd", momentum=self.momentum, weight_decay=self.weight_decay, seed=self.seed + 1,
                   device=device, callback=callback, resume_dir=resume_dir, desc="deep-defense", bn_eval=True)
