"""Make robustbench 1.1.1 importable in one place.

robustbench imports a module named ``autoattack`` but its dependency installs as ``pyautoattack``;
it also imports ``pkg_resources`` (pinned via setuptools<81 in pyproject).
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

from bench.core.errors import BenchError


def import_robustbench() -> ModuleType:
    """Return the ``robustbench`` module, aliasing ``autoattack`` to ``pyautoattack`` first."""
    if "autoattack" not in sys.modules:
        try:
            sys.modules["autoattack"] = importlib.import_module("pyautoattack")
        except ImportError as exc:
            raise BenchError(f"pyautoattack is not installed ({exc}); run: pip install -e .") from None
    try:
        return importlib.import_module("robustbench")
    except ImportError as exc:
        if getattr(exc, "name", None) == "robustbench":  # absent, not broken: it is an extra
            raise BenchError("robustbench:<Name> models need robustbench, which is not installed: "
                             "pip install -e '.[robustbench]'") from None
        raise BenchError(f"robustbench cannot be imported ({exc}); run: pip install -e '.[robustbench]'") from None


def import_autoattack() -> ModuleType:
    """Return pyautoattack (keyword-only API: AutoAttack(model, attacks=..., eps=..., norm=...))."""
    try:
        return importlib.import_module("pyautoattack")
    except ImportError as exc:
        raise BenchError(f"pyautoattack is not installed ({exc}); run: pip install -e .") from None
