"""Attacks: ``attacks.create(name, **params)`` returns a callable ``attack(model, x, y) -> x_adv``.

Importing this package imports every module in it, so each ``@register`` runs.
"""

from __future__ import annotations

import sys

from attacks.base import Attack, project_l2, project_linf
from attacks.registry import ATTACKS, create, list_names, register
from bench.plugins import import_all

import_all(sys.modules[__name__])

__all__ = ["ATTACKS", "Attack", "create", "list_names", "project_l2", "project_linf", "register"]
