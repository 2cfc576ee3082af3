"""Defenses: ``defenses.create(name, **hp)``; ``list_names(kind=None)`` with kind 'train' / 'runtime'.

Importing this package imports every module in it, so each ``@register`` runs. The registry and the
defense contracts live in bench.core (bench.core.methods, bench.core.contracts), below both method
packages; this package re-exports them.
"""

from __future__ import annotations

import sys

from bench.core.contracts import NeighbourScorer, Purifier, RuntimeDefense, StatefulDefense, TrainDefense
from bench.core.entrypoints import GROUPS, import_all, load_entry_points
from bench.core.methods import DEFENSES, applies, create_defense, defense_kind, defense_names, describe
from bench.core.methods import register_defense as register

create, list_names, kind_of = create_defense, defense_names, defense_kind

import_all(sys.modules[__name__])
load_entry_points(GROUPS["defenses"], DEFENSES)

__all__ = ["DEFENSES", "NeighbourScorer", "Purifier", "RuntimeDefense", "StatefulDefense", "TrainDefense", "applies",
           "create", "describe", "kind_of", "list_names", "register"]
