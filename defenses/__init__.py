"""Defenses: ``defenses.create(name, **hp)``; ``list_names(kind=None)`` with kind 'train' / 'runtime'.

Importing this package imports every module in it, so each ``@register`` runs.
"""

from __future__ import annotations

import sys

from bench.plugins import import_all
from defenses.base import RuntimeDefense, TrainDefense
from defenses.registry import DEFENSES, create, kind_of, list_names, register

import_all(sys.modules[__name__])

__all__ = ["DEFENSES", "RuntimeDefense", "TrainDefense", "create", "kind_of", "list_names", "register"]
