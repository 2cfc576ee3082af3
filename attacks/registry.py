"""The attack registry (``@register("pgd")``, ``create("pgd", **kw)``, ``list_names()``)."""

from __future__ import annotations

from typing import Any

from bench.core.registry import Registry

ATTACKS: Registry = Registry("attack")
register = ATTACKS.register


def create(name: str, **params: Any) -> Any:
    """Build attack ``name`` configured with ``params`` (eps, norm, steps, step_size, ...)."""
    return ATTACKS.create(name, **params)


def list_names() -> list[str]:
    return ATTACKS.list_names()
