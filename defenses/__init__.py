"""Defenses: ``defenses.create(name, **hp)``; ``list_names(kind=None)`` with kind 'train' / 'runtime'.

Importing this package imports every module in it, so each ``@register`` runs.
"""

from __future__ import annotations

import sys

from bench.core.entrypoints import GROUPS, import_all, load_entry_points
from defenses.base import RuntimeDefense, TrainDefense
from defenses.registry import DEFENSES, create, kind_of, list_names, register


def _contract(name: str, obj: object) -> str | None:
    """A defense is a TrainDefense (``train``) or a RuntimeDefense (``prepare`` / ``predict``)."""
    if isinstance(obj, type) and issubclass(obj, TrainDefense):
        return None if obj.train is not TrainDefense.train else "must implement train(model, train_set, ...)"
    if isinstance(obj, type) and issubclass(obj, RuntimeDefense):
        return None if obj.predict is not RuntimeDefense.predict else "must implement predict(x) -> logits"
    return "must be a subclass of defenses.TrainDefense or defenses.RuntimeDefense"


DEFENSES.contract = _contract
import_all(sys.modules[__name__])
load_entry_points(GROUPS["defenses"], DEFENSES)

__all__ = ["DEFENSES", "RuntimeDefense", "TrainDefense", "create", "kind_of", "list_names", "register"]
