"""What an architecture is: the architecture registry and the building blocks every network shares
(``Classifier``: ``forward = head(features(x))`` on inputs in [0, 1]; ``Normalize``). The networks
register themselves in bench.core.models, bench.core.archs_deepdefense, bench.core.archs_imagenet and
bench.core.archs_wide.
"""

from __future__ import annotations

import torch
from torch import nn

from bench.core.registry import Registry


def _contract(name: str, obj: object) -> str | None:
    """An architecture is a factory (num_classes, in_channels) -> nn.Module."""
    return None if callable(obj) else "must be callable: a factory (num_classes, in_channels) -> nn.Module"


ARCHS: Registry = Registry("architecture", contract=_contract)

CIFAR_MEAN = (0.485, 0.456, 0.406)  # the normalisation akamaster's checkpoints were trained with
CIFAR_STD = (0.229, 0.224, 0.225)


class Classifier(nn.Module):
    """Base: ``forward(x) = head(features(x))`` on inputs in [0, 1]."""

    def features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def head(self, f: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Normalize(nn.Module):
    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


