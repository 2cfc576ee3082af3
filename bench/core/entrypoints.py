"""Entry-point discovery for the registries (the foundation half of bench.spec.plugins).

A package extends the harness by declaring entry points (groups in ``GROUPS``); the registries of
attacks, defenses, architectures and datasets call :func:`load_entry_points` when first listed. What a
plugin registers is checked against its registry's contract; a failure is one line naming the plugin.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from types import ModuleType
from typing import Any

from bench.core.errors import BenchError
from bench.core.registry import Registry, set_origin

_SKIP = {"base", "registry", "training"}
GROUPS = {"attacks": "advbench.attacks", "defenses": "advbench.defenses", "archs": "advbench.archs",
          "datasets": "advbench.datasets"}


def import_all(package: ModuleType) -> None:
    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in _SKIP and not info.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{info.name}")


def check_new_entries(registry: Registry, origin: str, before: set[str]) -> None:
    for name in sorted(set(registry.list_names()) - before):
        problem = registry.contract(name, registry.get(name)) if registry.contract else None
        if problem:
            raise BenchError(f"{origin}: {registry.kind} {name!r} {problem}")


def _entry_points(group: str) -> Iterable[Any]:
    from importlib.metadata import entry_points

    return entry_points(group=group)


def load_entry_points(group: str, registry: Registry) -> None:
    """Register what the installed distributions declare under entry-point ``group``."""
    for ep in sorted(_entry_points(group), key=lambda e: e.name):
        dist = getattr(getattr(ep, "dist", None), "name", None) or ep.value.split(":")[0]
        origin = f"plugin {dist}"
        before = set(registry.list_names())
        previous = set_origin(origin)
        try:
            try:
                obj = ep.load()
            except BenchError:
                raise
            except Exception as exc:
                raise BenchError(f"{origin}: entry point {ep.name} = {ep.value!r} failed to import "
                                 f"({type(exc).__name__}: {str(exc)[:200]})") from None
            if not isinstance(obj, ModuleType) and registry.get_or_none(ep.name) is not obj:
                registry.register(ep.name)(obj)
        finally:
            set_origin(previous)
        check_new_entries(registry, origin, before)


