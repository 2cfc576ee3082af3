"""Import every module of a package so that its ``@register`` decorators run."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

_SKIP = {"base", "registry", "training"}


def import_all(package: ModuleType) -> None:
    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in _SKIP and not info.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{info.name}")
