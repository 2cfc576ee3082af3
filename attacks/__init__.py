"""Attacks: ``attacks.create(name, **params)`` returns a callable ``attack(model, x, y) -> x_adv``.

Importing this package imports every module in it, so each ``@register`` runs.
"""

from __future__ import annotations

import sys

from attacks.base import Attack, project_l2, project_linf
from attacks.registry import ATTACKS, create, list_names, register
from bench.core.entrypoints import GROUPS, import_all, load_entry_points


def _contract(name: str, obj: object) -> str | None:
    """An attack is an ``Attack`` subclass (configure once, call on (model, x, y))."""
    if not (isinstance(obj, type) and issubclass(obj, Attack)):
        return "must be a subclass of attacks.Attack (configure once, call on (model, x, y))"
    return None


ATTACKS.contract = _contract
import_all(sys.modules[__name__])
load_entry_points(GROUPS["attacks"], ATTACKS)

__all__ = ["ATTACKS", "Attack", "create", "list_names", "project_l2", "project_linf", "register"]
