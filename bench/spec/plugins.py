"""Registering methods: built-in modules, installed plugins (entry points) and plugin files.

A package extends the harness by declaring entry points, the convention pytest and many ML
libraries use::

    [project.entry-points."advbench.attacks"]      # also advbench.defenses, .archs, .datasets
    noise = "my_pkg.attacks:UniformNoise"          # registered as "noise"
    more = "my_pkg.more_attacks"                   # a module whose @register calls run on import

A single file works too: ``bench run --plugin my_defense.py`` (or ``plugins = [...]`` in a grid)
imports it, and its ``@attacks.register(...)`` / ``@defenses.register(...)`` calls run. A name that
collides with an existing one, a plugin that fails to import, or an object that does not satisfy its
contract is one line naming the plugin (exit 2), before any work starts. Only an installed plugin that
fails to import is a warning instead (bench.core.entrypoints): it is there for every command, most of
which do not need it; a plugin file stays an error, since the command or the grid asked for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from bench.core.entrypoints import GROUPS, check_new_entries, import_all, load_entry_points
from bench.core.registry import Registry, set_origin

__all__ = ["GROUPS", "import_all", "load_entry_points", "load_files"]


def _registries() -> list[Registry]:
    import attacks
    import defenses
    from bench.core.data import DATASETS
    from bench.core.models import ARCHS

    return [attacks.ATTACKS, defenses.DEFENSES, ARCHS, DATASETS]


def load_files(paths: Iterable[str | Path]) -> None:
    """Import plugin files (once each); what they register is checked against its contract."""
    from bench.core.imports import import_file

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
            check_new_entries(registry, origin, names)
