"""Standard (empirical-risk) training with Adam; RMC supplement A.1/A.2 settings."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bench.core.contracts import EpochCallback, TrainDefense
from bench.core.data import Dataset
from bench.core.methods import register_defense as register
from defenses.training import fit


@register("standard")
class Standard(TrainDefense):
    """Minimise cross-entropy: Adam, lr 1e-3 (MNIST) / 1e-4 (CIFAR-10), batch 128."""

    dataset_defaults = {
        "digits": {"epochs": 30, "lr": 1e-3},
        "mnist": {"epochs": 10, "lr": 1e-3},
        "cifar10": {"epochs": 100, "lr": 1e-4},
    }

    #: epochs = 0 is no training: the model keeps its seeded initial weights (imagenet-rmc's classifier).
    minimums = {**TrainDefense.minimums, "epochs": (0, "0 means no training: the seeded initial weights")}

    def __init__(self, epochs: int = 10, lr: float = 1e-3, batch_size: int = 128, optimizer: str = "adam",
                 weight_decay: float = 0.0, seed: int = 0) -> None:
        self.epochs, self.lr, self.batch_size = int(epochs), float(lr), int(batch_size)
        self.optimizer, self.weight_decay, self.seed = optimizer, float(weight_decay), int(seed)

    def train(self, model: nn.Module, train_set: Dataset, *, device: torch.device | str = "cpu",
              callback: EpochCallback | None = None, resume_dir: Any = None) -> nn.Module:
        return fit(model, train_set, epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                   optimizer=self.optimizer, weight_decay=self.weight_decay, seed=self.seed,
                   device=device, callback=callback, resume_dir=resume_dir, desc="standard")
