"""What a dataset is: the ``Dataset`` type, the dataset registry, and what each dataset declares about
itself when it registers (its family of seed-paper defaults, its image shape and class count).

A loader registers with ``@register_dataset("name", family=..., shape=(C, H, W), num_classes=...)``;
the built-in loaders live in bench.core.data (and bench.core.imagenet), plugins anywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from bench.core.registry import Registry

#: Seeded synthetic stand-ins (``--synthetic``) hold this many images unless a dataset declares fewer.
SYNTHETIC_SIZE = 1024


def _contract(name: str, obj: object) -> str | None:
    """A dataset is a loader (split, root, download) -> bench.core.data.Dataset."""
    return None if callable(obj) else "must be callable: a loader (split, root, download) -> bench.core.data.Dataset"


DATASETS: Registry = Registry("dataset", contract=_contract)
SPLITS = ("train", "test")


@dataclass
class Dataset:
    """Images ``x`` (N, C, H, W) float32 in [0, 1] and labels ``y`` (N,) int64."""

    name: str
    split: str
    x: torch.Tensor
    y: torch.Tensor
    num_classes: int

    @property
    def family(self) -> str:
        """Which seed-paper defaults apply: ``mnist`` for 1-channel sets, else the name."""
        return family_of(self.name)

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, n: int | None, offset: int = 0) -> Dataset:
        end = None if n is None else offset + n
        return Dataset(self.name, self.split, self.x[offset:end], self.y[offset:end], self.num_classes)


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset declares when it registers."""

    #: which seed-paper defaults its methods take (``dataset_defaults`` keys): ``mnist`` for MNIST-like sets
    family: str
    #: (channels, height, width) of its images, for synthetic stand-ins (None: no stand-in)
    shape: tuple[int, int, int] | None = None
    num_classes: int | None = None
    synthetic_size: int = SYNTHETIC_SIZE


_INFO: dict[str, DatasetInfo] = {}


def register_dataset(name: str, *, family: str | None = None, shape: tuple[int, int, int] | None = None,
                     num_classes: int | None = None,
                     synthetic_size: int = SYNTHETIC_SIZE) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register loader ``name`` with what it declares (``family`` defaults to the name itself)."""
    def decorator(loader: Callable[..., Any]) -> Callable[..., Any]:
        _INFO[name] = DatasetInfo(family or name, shape, num_classes, synthetic_size)
        return DATASETS.register(name)(loader)

    return decorator


def info(name: str) -> DatasetInfo:
    """What dataset ``name`` declared (a loader registered without declarations: its own family only)."""
    return _INFO.get(name, DatasetInfo(name))


def family_of(name: str) -> str:
    return info(name).family
