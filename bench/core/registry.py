"""One timm-style registry shared by attacks, defenses, datasets, architectures and grids."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from bench.core.errors import BenchError

T = TypeVar("T")
BUILTIN = "builtin"
#: Where registrations come from right now (set while a plugin imports; see bench.spec.plugins).
_ORIGIN = {"current": BUILTIN}


def current_origin() -> str:
    return _ORIGIN["current"]


def set_origin(origin: str) -> str:
    """Set the origin of the registrations that follow; returns the previous one."""
    previous, _ORIGIN["current"] = _ORIGIN["current"], origin
    return previous


def base_name(name: str) -> str:
    """``median@k5`` -> ``median``: a grid names a second instance of a method (other hyperparameters,
    e.g. a sweep) as ``<registered name>@<variant>``; lookups use the part before ``@``."""
    if not isinstance(name, str):
        return name
    base, at, variant = name.partition("@")
    return base if at and variant and base else name  # "rmc@" names nothing


def describe(obj: object) -> str:
    """One line describing a registered entry: the first paragraph of its docstring, whitespace
    collapsed (what ``bench list`` prints; a docstring's first paragraph is its summary)."""
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return " ".join(doc.split("\n\n")[0].split())


class Registry(Generic[T]):
    """A named collection of factories: ``@reg.register("pgd")``, ``reg.create("pgd", **kw)``.
    Lookups accept ``name@variant`` for ``name`` (see ``base_name``)."""

    def __init__(self, kind: str, package: str | None = None,
                 contract: Callable[[str, Any], str | None] | None = None) -> None:
        """``package``: the package whose import registers the built-in entries (e.g. ``"attacks"``),
        imported by name on first lookup, so the registry can live below the package that fills it."""
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._origins: dict[str, str] = {}
        self._package, self._populated = package, package is None
        #: ``contract(name, obj)`` -> what is wrong, or None; checked for plugin entries.
        self.contract = contract

    def populate(self) -> None:
        """Import the built-in package once (its modules register themselves, then its plugins')."""
        if not self._populated:
            self._populated = True  # first: the package's own lookups while it imports must not recurse
            importlib.import_module(self._package)  # type: ignore[arg-type]

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                origin, first = current_origin(), self._origins.get(name, BUILTIN)
                raise BenchError(f"{origin}: {self.kind} {name!r} is already registered by {first}; "
                                 "rename it")
            self._entries[name] = obj
            self._origins.setdefault(name, current_origin())
            try:
                obj.registry_name = name  # type: ignore[attr-defined]
            except (AttributeError, TypeError):
                pass
            return obj

        return decorator

    def drop(self, names: set[str]) -> None:
        """Forget ``names`` (what a plugin registered before its import failed)."""
        for name in names:
            self._entries.pop(name, None)
            self._origins.pop(name, None)

    def get(self, name: str) -> T:
        """The entry ``name``; ``base@variant`` (e.g. ``rmc@k64``, a grid's second configuration of
        one defense) is the entry ``base``."""
        self.populate()
        try:
            return self._entries[base_name(name)]
        except KeyError:
            raise BenchError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        names = self.list_names()
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.kind} {name!r}.{hint} Valid {self.kind}s: {', '.join(names)}"

    def create(self, name: str, **params: Any) -> Any:
        factory = self.get(name)
        try:
            return factory(**params)  # type: ignore[operator]
        except TypeError as exc:
            if "unexpected keyword" in str(exc) or "positional argument" in str(exc):
                raise BenchError(f"bad parameters for {self.kind} {name!r}: {exc}") from None
            raise

    def get_or_none(self, name: str) -> T | None:
        self.populate()
        return self._entries.get(base_name(name))

    def origin(self, name: str) -> str:
        """``builtin`` or ``plugin <distribution or file>``."""
        return self._origins.get(name, BUILTIN)

    def list_names(self) -> list[str]:
        self.populate()
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        self.populate()
        return iter(sorted(self._entries.items()))

    def __contains__(self, name: object) -> bool:
        self.populate()
        return base_name(name) in self._entries  # type: ignore[arg-type]

    def __len__(self) -> int:
        self.populate()
        return len(self._entries)
