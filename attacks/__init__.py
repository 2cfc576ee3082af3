"""Attacks: ``attacks.create(name, **params)`` returns an attack; ``attack(model, x, y) -> x_adv``.

Importing this package imports every module in it, so each ``@register`` runs. The registry and the
attack contract live in bench.core (bench.core.methods, bench.core.contracts), below both method
packages; this package re-exports them.
"""

from __future__ import annotations

import sys

from bench.core.contracts import Attack, AttackResult, StreamOutcome, project_l2, project_linf
from bench.core.entrypoints import GROUPS, import_all, load_entry_points
from bench.core.methods import ATTACKS, create_attack
from bench.core.methods import register_attack as register

create = create_attack


def list_names() -> list[str]:
    return ATTACKS.list_names()


import_all(sys.modules[__name__])
load_entry_points(GROUPS["attacks"], ATTACKS)

__all__ = ["ATTACKS", "Attack", "AttackResult", "StreamOutcome", "create", "list_names", "project_l2", "project_linf",
           "register"]
