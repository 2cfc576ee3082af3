"""Adversarial training: FGSM (Goodfellow et al., ICLR 2015), PGD (Madry et al., ICLR 2018) and
DeepFool fine-tuning (Moosavi-Dezfooli et al., CVPR 2016, section 4.2).

In Deep Defense's supplement (Yan et al., NeurIPS 2018) ``adv-deepfool`` is "Adv. Train I" (Table 2,
Figure 7) and ``adv-fgsm`` is "Adv. Train II" (section 2, Figure 6).

For adv-fgsm and adv-pgd each batch is perturbed against the current weights with the registered
attack, and the model is trained on ``clean_weight`` * CE(clean) + (1 - clean_weight) * CE(adversarial).
Settings from the RMC supplement (A.1 / A.2): MNIST eps 0.3, PGD 10 steps of 0.01; CIFAR-10 eps
8/255, 10 steps of 2/255.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench.core.contracts import EpochCallback, TrainDefense
from bench.core.data import Dataset
from bench.core.methods import create_attack
from bench.core.methods import register_defense as register
from defenses.finetune import FineTune
from defenses.training import fit


class AdversarialTraining(TrainDefense):
    attack_name = "pgd"

    def __init__(self, eps: float = 0.3, steps: int = 10, step_size: float | None = None, clean_weight: float = 0.0,
                 epochs: int = 10, lr: float = 1e-3, batch_size: int = 128, seed: int = 0) -> None:
        self.eps, self.steps = float(eps), int(steps)
        self.step_size = None if step_size is None else float(step_size)
        self.clean_weight = float(clean_weight)
        self.epochs, self.lr, self.batch_size, self.seed = int(epochs), float(lr), int(batch_size), int(seed)
        self._calls = 0

    def _attack(self) -> Any:
        self._calls += 1  # a fresh random start per batch, still reproducible
        kw: dict[str, Any] = {"eps": self.eps, "seed": self.seed * 1_000_003 + self._calls}
        if self.attack_name == "pgd":
            kw.update(steps=self.steps, step_size=self.step_size, random_start=True)
        return create_attack(self.attack_name, **kw)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_adv = self._attack()(model, x, y)
        logits_adv = model(x_adv)
        loss = F.cross_entropy(logits_adv, y)
        if self.clean_weight > 0:
            logits = model(x)
            loss = self.clean_weight * F.cross_entropy(logits, y) + (1 - self.clean_weight) * loss
            return loss, logits
        return loss, logits_adv

    def train(self, model: nn.Module, train_set: Dataset, *, device: torch.device | str = "cpu",
              callback: EpochCallback | None = None, resume_dir: Any = None) -> nn.Module:
        self._calls = 0
        return fit(model, train_set, self.loss, epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                   seed=self.seed, device=device, callback=callback, resume_dir=resume_dir,
                   desc=f"adv-{self.attack_name}")


@register("adv-fgsm")
class AdvFGSM(AdversarialTraining):
    """FGSM adversarial training from scratch, half clean, half adversarial (Goodfellow et al., 2015).

    Goodfellow et al., ICLR 2015; Deep Defense's "Adv. Train II" (its supplement, section 2, Figure 6).
    """

    attack_name = "fgsm"
    work_params = ()  # one FGSM step per batch, whatever ``steps`` says (read by bench.run.estimate)
    dataset_defaults = {
        "digits": {"eps": 0.1, "epochs": 30, "lr": 1e-3, "clean_weight": 0.5},
        "mnist": {"eps": 0.3, "epochs": 10, "lr": 1e-3, "clean_weight": 0.5},
        "cifar10": {"eps": 8 / 255, "epochs": 100, "lr": 1e-4, "clean_weight": 0.5},
    }


@register("adv-pgd")
class AdvPGD(AdversarialTraining):
    """PGD adversarial training on the worst case in the eps ball (Madry et al. 2018)."""

    attack_name = "pgd"
    dataset_defaults = {
        "digits": {"eps": 0.1, "steps": 7, "step_size": 0.025, "epochs": 30, "lr": 1e-3},
        "mnist": {"eps": 0.3, "steps": 10, "step_size": 0.01, "epochs": 10, "lr": 1e-3},
        "cifar10": {"eps": 8 / 255, "steps": 10, "step_size": 2 / 255, "epochs": 100, "lr": 1e-4},
    }


@register("adv-deepfool")
class AdvDeepFool(FineTune):
    """Deep Defense's "Adv. Train I": the reference fine-tuned on DeepFool examples (Yan et al., 2018).

    Yan et al., NeurIPS 2018, supplement Table 2 and Figure 7; the training follows Moosavi-Dezfooli
    et al., CVPR 2016, section 4.2.

    Pretrains exactly like ``standard`` (``pretrain_epochs``), then fine-tunes with the supplement's
    Table 3 SGD schedule (FineTune) on clean_weight * CE(clean) + (1 - clean_weight) * CE(DeepFool
    examples of the current weights), the examples crafted by the registered ``deepfool`` attack and
    detached (no gradient through the attack). Choices the papers leave open: clean_weight 0.5 (half
    clean, as Goodfellow et al.), overshoot 0.02 (DeepFool's default) and at most 5 DeepFool
    iterations (Deep Defense's unrolled-DeepFool default). Examples the model already misclassifies
    are left unchanged by DeepFool, so their adversarial term is their clean CE.
    """

    def __init__(self, clean_weight: float = 0.5, iterations: int = 5, overshoot: float = 0.02, **kw: Any) -> None:
        super().__init__(**kw)
        self.clean_weight, self.iterations, self.overshoot = float(clean_weight), int(iterations), float(overshoot)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attack = create_attack("deepfool", steps=self.iterations, overshoot=self.overshoot, seed=self.seed)
        x_adv = attack(model, x, y).detach()
        logits = model(x)
        loss = self.clean_weight * F.cross_entropy(logits, y)
        return loss + (1 - self.clean_weight) * F.cross_entropy(model(x_adv), y), logits
