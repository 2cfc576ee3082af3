"""Defenses: ``defenses.create(name, **hp)``; ``list_names(kind=None)`` with kind 'train' / 'runtime'.

Importing this package imports every module in it, so each ``@register`` runs.
"""

from __future__ import annotations

import sys

from bench.core.entrypoints import GROUPS, import_all, load_entry_points
from defenses.base import RuntimeDefense, StatefulDefense, TrainDefense
from defenses.purify import Purifier
from defenses.registry import DEFENSES, applies, create, describe, kind_of, list_names, register


def _contract(name: str, obj: object) -> str | None:
    """A defense is a TrainDefense (``train``) or a RuntimeDefense (``prepare`` / ``predict``); a
    stateful one is a StatefulDefense with every method of that contract."""
    if isinstance(obj, type) and issubclass(obj, TrainDefense):
        return None if obj.train is not TrainDefense.train else "must implement train(model, train_set, ...)"
    if not (isinstance(obj, type) and issubclass(obj, RuntimeDefense)):
        return "must be a subclass of defenses.TrainDefense or defenses.RuntimeDefense"
    if obj.predict is RuntimeDefense.predict:
        return "must implement predict(x) -> logits"
    if issubclass(obj, StatefulDefense):
        missing = sorted(getattr(obj, "__abstractmethods__", ()))
        if missing:
            return (f"is a defenses.StatefulDefense but does not implement {', '.join(missing)} "
                    "(snapshot, restore, reset and adapted_model are all required)")
    elif getattr(obj, "stateful", False) is True:
        return ("sets stateful = True but is not a subclass of defenses.StatefulDefense "
                "(snapshot, restore, reset, adapted_model)")
    return None


DEFENSES.contract = _contract
import_all(sys.modules[__name__])
load_entry_points(GROUPS["defenses"], DEFENSES)

__all__ = ["DEFENSES", "Purifier", "RuntimeDefense", "StatefulDefense", "TrainDefense", "applies", "create", "describe",
           "kind_of", "list_names", "register"]
