"""Entry-point discovery for the registries (the foundation half of bench.spec.plugins).

A package extends the harness by declaring entry points (groups in ``GROUPS``); the registries of
attacks, defenses, architectures and datasets call :func:`load_entry_points` when first listed. What a
plugin registers is checked against its registry's contract; a failure is one line naming the plugin.
An installed plugin that fails to import (a dependency missing here, a bug) is one warning line
instead: it breaks no command, and a grid that names one of its methods fails with the usual
unknown-name line.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
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
    """Refuse a plugin's entry that breaks the registry's contract, and forget what that plugin
    registered (an in-process caller, ``bench.evaluate`` or a test, must not keep it)."""
    added = set(registry.list_names()) - before
    for name in sorted(added):
        problem = registry.contract(name, registry.get(name)) if registry.contract else None
        if problem:
            registry.drop(added)
            raise BenchError(f"{origin}: {registry.kind} {name!r} {problem}")


def _entry_points(group: str) -> Iterable[Any]:
    from importlib.metadata import entry_points

    return entry_points(group=group)


#: Set (to anything) in --jobs workers: the parent already warned about each broken plugin.
QUIET_ENV = "BENCH_QUIET_PLUGIN_WARNINGS"


def warn_broken(line: str) -> None:
    """One warning line on stderr (not in --jobs workers, whose parent said it)."""
    if not os.environ.get(QUIET_ENV):
        print(f"warning: {line}", file=sys.stderr, flush=True)


def load_entry_points(group: str, registry: Registry) -> None:
    """Register what the installed distributions declare under entry-point ``group``; one that fails
    to import is a warning, and whatever it registered before failing is dropped."""
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
                registry.drop(set(registry.list_names()) - before)
                first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
                warn_broken(f"{origin}: entry point {ep.name} = {ep.value!r} failed to import "
                            f"({type(exc).__name__}{': ' + first if first else ''}); its {registry.kind}s are "
                            "unavailable")
                continue
            if not isinstance(obj, ModuleType) and registry.get_or_none(ep.name) is not obj:
                registry.register(ep.name)(obj)
        finally:
            set_origin(previous)
        check_new_entries(registry, origin, before)


