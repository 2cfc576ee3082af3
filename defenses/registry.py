"""The defense registry, shared by train-time and runtime defenses."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bench.core.errors import BenchError
from bench.core.registry import Registry

DEFENSES: Registry = Registry("defense")
register = DEFENSES.register
KINDS = ("train", "runtime")


def create(name: str, **params: Any) -> Any:
    """Build defense ``name`` with hyperparameters ``params``."""
    return DEFENSES.create(name, **params)


def list_names(kind: str | None = None) -> list[str]:
    """All defense names, or only those of ``kind`` ('train' or 'runtime')."""
    if kind is not None and kind not in KINDS:
        raise BenchError(f"unknown defense kind {kind!r}; use one of {', '.join(KINDS)}")
    return [n for n, cls in DEFENSES.items() if kind is None or cls.kind == kind]


def kind_of(name: str) -> str:
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
