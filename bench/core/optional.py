"""Optional dependencies: one import helper that turns a missing extra into one line naming it.

pyproject.toml's extras: ``cpu`` (faiss-cpu) or ``gpu`` (faiss-gpu), the nearest-neighbour index, one
of the two (both install the same ``faiss`` module); ``pass`` (opencv, Deep Defense's PASS metric);
``robustbench`` (the ``robustbench:<Name>`` model source); ``ray`` (the Ray executor).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from bench.core.errors import BenchError

FAISS_HINT = "pip install -e '.[cpu]' (faiss-cpu) or -e '.[gpu]' (faiss-gpu, CUDA), one of the two"


def require(module: str, extra: str, feature: str, package: str | None = None) -> ModuleType:
    """``module`` imported, or a BenchError: "<feature> needs <package>, which is not installed:
    pip install -e '.[<extra>]'"."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise BenchError(f"{feature} needs {package or module}, which is not installed: "
                         f"pip install -e '.[{extra}]'") from None


def require_faiss() -> ModuleType:
    """The ``faiss`` module (from faiss-cpu or faiss-gpu), or one line naming both extras."""
    try:
        return importlib.import_module("faiss")
    except ImportError:
        raise BenchError(f"the nearest-neighbour index (deepnn, webnn, rmc, pgd-nn) needs faiss, which is not "
                         f"installed: {FAISS_HINT}") from None
