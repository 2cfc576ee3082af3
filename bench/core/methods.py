"""The attack and defense registries: where the harness and the methods find each other by name.

``ATTACKS`` and ``DEFENSES`` live here, below both method packages, so a defense that needs an
attack (D' of RMC / WebNN, adversarial training) asks for it by name (``create_attack("pgd", ...)``)
without importing ``attacks``, and an attack never imports ``defenses``. Each registry fills itself
on first use from its built-in package (which registers every module on import) and the installed
plugins' entry points; what a plugin registers is checked against the contracts
(bench.core.contracts).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bench.core.contracts.attack import Attack
from bench.core.contracts.defense import RuntimeDefense, StatefulDefense, TrainDefense
from bench.core.errors import BenchError
from bench.core.registry import Registry


def _attack_contract(name: str, obj: object) -> str | None:
    """An attack is an ``Attack`` subclass (configure once, call on (model, x, y))."""
    if not (isinstance(obj, type) and issubclass(obj, Attack)):
        return "must be a subclass of attacks.Attack (configure once, call on (model, x, y))"
    return None


def _defense_contract(name: str, obj: object) -> str | None:
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
    elif obj.stateful is True:
        return ("sets stateful = True but is not a subclass of defenses.StatefulDefense "
                "(snapshot, restore, reset, adapted_model)")
    return None


ATTACKS: Registry = Registry("attack", package="attacks", contract=_attack_contract)
DEFENSES: Registry = Registry("defense", package="defenses", contract=_defense_contract)
DEFENSE_KINDS = ("train", "runtime")
#: ``@register_attack("pgd")`` / ``@register_defense("rmc")`` (timm-style decorators)
register_attack = ATTACKS.register
register_defense = DEFENSES.register


def with_dataset_defaults(factory: Any, family: str, given: dict[str, Any]) -> dict[str, Any]:
    """A method's seed-paper defaults for the dataset family (its ``dataset_defaults``), overlaid by
    ``given``: a shallow merge, so a given dict (``db_params``) replaces the default one whole."""
    return {**getattr(factory, "dataset_defaults", {}).get(family, {}), **given}


def create_attack(name: str, **params: Any) -> Any:
    """Build attack ``name`` configured with ``params`` (eps, norm, steps, step_size, ...)."""
    return ATTACKS.create(name, **params)


def create_defense(name: str, **params: Any) -> Any:
    """Build defense ``name`` with hyperparameters ``params``."""
    return DEFENSES.create(name, **params)


def defense_names(kind: str | None = None) -> list[str]:
    """All defense names, or only those of ``kind`` ('train' or 'runtime')."""
    if kind is not None and kind not in DEFENSE_KINDS:
        raise BenchError(f"unknown defense kind {kind!r}; use one of {', '.join(DEFENSE_KINDS)}")
    return [n for n, cls in DEFENSES.items() if kind is None or cls.kind == kind]


def defense_kind(name: str) -> str:
    return DEFENSES.get(name).kind


def applies(allowed: Iterable[str | type], name: str) -> bool:
    """Whether runtime defense ``name`` is in an attack's ``applies_to``: its registered name, or a
    contract class it subclasses (``StatefulDefense``: any stateful defense, plugins included)."""
    cls = DEFENSES.get_or_none(name)
    base = name.partition("@")[0]  # "rmc@k64" is a configuration of rmc
    return any(a == base if isinstance(a, str) else isinstance(cls, type) and issubclass(cls, a) for a in allowed)


def describe(allowed: Iterable[str | type]) -> str:
    """``applies_to`` for a message: names as they are, classes as 'any <Class>'."""
    return ", ".join(a if isinstance(a, str) else f"any {a.__name__}" for a in allowed)
