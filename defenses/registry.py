"""The defense registry, shared by train-time and runtime defenses."""

from __future__ import annotations

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
