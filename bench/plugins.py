"""Registering methods: built-in modules, installed plugins (entry points) and plugin files.

A package extends the harness by declaring entry points, the convention pytest and many ML
libraries use::

    [project.entry-points."advbench.attacks"]      # also advbench.defenses, .archs, .datasets
    noise = "my_pkg.attacks:UniformNoise"          # registered as "noise"
    more = "my_pkg.more_attacks"                   # a module whose @register calls run on import

A single file works too: ``bench run --plugin my_defense.py`` (or ``plugins = [...]`` in a grid)
imports it, and its ``@attacks.register(...)`` / ``@defenses.register(...)`` calls run. A name that
collides with an existing one, a plugin that fails to import, or an object that does not satisfy its
contract is one line naming the plugin (exit 2), before any work starts.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.errors import BenchError
from bench.registry import Registry, set_origin

_SKIP = {"base", "registry", "training"}
GROUPS = {"attacks": "advbench.attacks", "defenses": "advbench.defenses", "archs": "advbench.archs",
          "datasets": "advbench.datasets"}


def import_all(package: ModuleType) -> None:
    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in _SKIP and not info.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{info.name}")


def _check(registry: Registry, origin: str, before: set[str]) -> None:
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
        _check(registry, origin, before)


def _registries() -> list[Registry]:
    import attacks
    import defenses
    from bench.data import DATASETS
    from bench.models import ARCHS

    return [attacks.ATTACKS, defenses.DEFENSES, ARCHS, DATASETS]


def load_files(paths: Iterable[str | Path]) -> None:
    """Import plugin files (once each); what they register is checked against its contract."""
    from bench.imports import import_file

    paths = list(paths)
    if not paths:
        return
    registries = _registries()
    for path in paths:
        origin = f"plugin {path}"
        before = [set(r.list_names()) for r in registries]
        previous = set_origin(origin)
        try:
            import_file(path, what="plugin")
        finally:
            set_origin(previous)
        for registry, names in zip(registries, before):
            _check(registry, origin, names)
