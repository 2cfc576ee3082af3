"""The fine-tuning schedule shared by Deep Defense and Parseval training (Deep Defense supplement,
Table 3): ``pretrain_epochs`` of standard training (Adam, the standard model's batch), then SGD with
momentum and weight decay on the defense's ``loss``, BatchNorm statistics frozen."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from bench.core.contracts import EpochCallback, TrainDefense
from bench.core.data import Dataset
from defenses.training import fit


class FineTune(TrainDefense):
    """Pretrain, then fine-tune ``self.loss`` (subclasses define it) with SGD."""

    dataset_defaults: ClassVar[dict[str, dict[str, Any]]] = {
        # digits (our choice): 10 epochs at lr 5e-3; the paper's lr 5e-4 barely moves in a few epochs.
        "digits": {"epochs": 10, "lr": 5e-3, "pretrain_epochs": 30, "pretrain_lr": 1e-3},
        "mnist": {"epochs": 5, "pretrain_epochs": 10, "pretrain_lr": 1e-3},
        "cifar10": {"epochs": 50, "pretrain_epochs": 100, "pretrain_lr": 1e-4},
    }

    def __init__(self, epochs: int = 5, lr: float = 5e-4, momentum: float = 0.9, weight_decay: float = 5e-4,
                 batch_size: int = 100, pretrain_epochs: int = 0, pretrain_lr: float = 1e-3,
                 pretrain_batch_size: int = 128, seed: int = 0) -> None:
        self.epochs, self.lr, self.momentum = int(epochs), float(lr), float(momentum)
        self.weight_decay, self.batch_size = float(weight_decay), int(batch_size)
        self.pretrain_epochs, self.pretrain_lr, self.seed = int(pretrain_epochs), float(pretrain_lr), int(seed)
        self.pretrain_batch_size = int(pretrain_batch_size)  # the standard model's batch, so pretraining equals it

    def train(self, model: nn.Module, train_set: Dataset, *, device: torch.device | str = "cpu",
              callback: EpochCallback | None = None, resume_dir: Any = None) -> nn.Module:
        name = getattr(self, "registry_name", type(self).__name__)
        if self.pretrain_epochs > 0:
            pre_dir = None if resume_dir is None else Path(resume_dir) / "pretrain"
            model = fit(model, train_set, epochs=self.pretrain_epochs, lr=self.pretrain_lr,
                        batch_size=self.pretrain_batch_size, seed=self.seed, device=device, resume_dir=pre_dir,
                        desc=f"{name} pretrain")
        return fit(model, train_set, self.loss, epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                   optimizer="sgd", momentum=self.momentum, weight_decay=self.weight_decay, seed=self.seed + 1,
                   device=device, callback=callback, resume_dir=resume_dir, desc=name, bn_eval=True)
