"""Import a user's object by reference: ``"my_pkg.nets:build"`` or ``"path/to/nets.py:build"``.

Used for models named in grid files and for plugin files (``--plugin my_defense.py``). A file is
imported once per resolved path, under a module name derived from its path, so two grid entries that
name the same file share one module (and its ``@register`` calls run once).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.core.errors import BenchError

_FILE_MODULES: dict[Path, ModuleType] = {}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__


def import_file(path: str | Path, what: str = "module") -> ModuleType:
    """Import the Python file ``path`` (once); a missing file or an import error is one line."""
    path = Path(path).expanduser().resolve()
    if path in _FILE_MODULES:
        return _FILE_MODULES[path]
    if not path.is_file():
        raise BenchError(f"{what} file {path} not found")
    name = "advbench_user_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise BenchError(f"{what} file {path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BenchError:
        sys.modules.pop(name, None)
        raise
    except Exception as exc:  # a user's file may raise anything while importing
        sys.modules.pop(name, None)
        raise BenchError(f"{what} file {path} failed to import ({_first_line(exc)})") from None
    _FILE_MODULES[path] = module
    return module


def split_ref(ref: str) -> tuple[str, str]:
    """``"mod:attr"`` -> ("mod", "attr"); the attribute part is required."""
    target, sep, attr = ref.rpartition(":")
    if not sep or not target or not attr:
        raise BenchError(f"object reference {ref!r} must look like 'package.module:name' or 'file.py:name'")
    return target, attr


def is_file_ref(target: str) -> bool:
    return target.endswith(".py") or "/" in target or "\\" in target


def resolve_ref_path(ref: str, base_dir: str | Path | None) -> str:
    """Make the file part of ``ref`` absolute, relative to ``base_dir`` (a grid file's folder)."""
    target, attr = split_ref(ref)
    if is_file_ref(target) and base_dir is not None and not Path(target).expanduser().is_absolute():
        target = str((Path(base_dir) / target).resolve())
    return f"{target}:{attr}"


def load_object(ref: str, base_dir: str | Path | None = None, what: str = "object") -> Any:
    """The object ``ref`` names (a module attribute, dotted attributes allowed)."""
    target, attr = split_ref(resolve_ref_path(ref, base_dir))
    if is_file_ref(target):
        module = import_file(target, what)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise BenchError(f"cannot import {target!r} for {what} {ref!r} ({_first_line(exc)}); "
                             "is the package installed?") from None
        except Exception as exc:
            raise BenchError(f"module {target!r} failed to import ({_first_line(exc)})") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise BenchError(f"{what} {ref!r}: {target!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def ref_fingerprint(ref: str, base_dir: str | Path | None = None) -> str:
    """sha256 of the file a file reference names ('' for package references): a changed model
    definition is a new model."""
    target, _ = split_ref(resolve_ref_path(ref, base_dir))
    if not is_file_ref(target):
        return ""
    path = Path(target).expanduser()
    if not path.is_file():
        raise BenchError(f"model file {path} not found (named by {ref!r})")
    return hashlib.sha256(path.read_bytes()).hexdigest()
