"""Check a grid's hyperparameters against each method's signature before anything runs.

A typo (``epochz = 1``) or a wrong type (``steps = "ten"``) is one line and exit 2 when the grid is
loaded, not a failed cell an hour in. Parameters are read from ``__init__`` along the class's MRO
for as long as each level forwards ``**kwargs``; wrappers (bpda, eot) check the rest against the
attack they wrap. Annotations are checked where they are plain types (int, float, str, bool, list,
dict, unions with None); anything fancier is accepted.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from typing import Any

from bench.core.errors import BenchError

_SCALARS = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
            list: "a list", tuple: "a list", dict: "a table"}


def signature_params(cls: Any) -> tuple[dict[str, Any], bool]:
    """(name -> annotation, open) for ``cls``'s constructor; ``open`` when any name is accepted."""
    params: dict[str, Any] = {}
    targets = [c for c in getattr(cls, "__mro__", (cls,)) if "__init__" in vars(c)] if isinstance(cls, type) else [cls]
    for target in targets:
        fn = target.__init__ if isinstance(target, type) else target
        if fn is object.__init__:
            return params, False
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return params, True
        try:
            hints = typing.get_type_hints(fn)
        except Exception:  # a name imported only under TYPE_CHECKING: the names still count, untyped
            hints = {}
        forwards = False
        for name, p in sig.parameters.items():
            if name == "self" or p.kind is p.VAR_POSITIONAL:
                continue
            if p.kind is p.VAR_KEYWORD:
                forwards = True
                continue
            params.setdefault(name, hints.get(name, Any))
        if not forwards:
            return params, False
    return params, True


def _accepts(annotation: Any, value: Any) -> bool:
    if annotation is Any or annotation is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(a, value) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    base = origin or annotation
    if base is typing.Literal:
        return value in typing.get_args(annotation)
    if base not in _SCALARS:
        return True
    if isinstance(value, bool):
        return base is bool
    if base is float:
        return isinstance(value, (int, float))
    if base in (list, tuple):
        return isinstance(value, (list, tuple))
    return isinstance(value, base)


def _expected(annotation: Any) -> str:
    args = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) \
        else (annotation,)
    literal = [v for a in args if typing.get_origin(a) is typing.Literal for v in typing.get_args(a)]
    if literal:  # a choice of values: name them
        return "one of " + ", ".join(repr(v) for v in literal)
    names = [_SCALARS.get(typing.get_origin(a) or a, getattr(a, "__name__", str(a))) for a in args
             if a is not type(None)]
    return " or ".join(dict.fromkeys(names))


def check_params(factory: Any, given: dict[str, Any], what: str, ignore: tuple[str, ...] = ()) -> None:
    """Raise a one-line BenchError for an unknown or wrongly typed parameter of ``factory``."""
    import difflib

    params, open_ = signature_params(factory)
    for key, value in given.items():
        if key in ignore:
            continue
        if key not in params:
            if open_:
                continue
            close = difflib.get_close_matches(key, list(params), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            valid = ", ".join(sorted(k for k in params if k not in ignore)) or "none"
            raise BenchError(f"{what}: unknown parameter {key!r}.{hint} Valid: {valid}")
        if not _accepts(params[key], value):
            raise BenchError(f"{what}: parameter {key} = {value!r} should be {_expected(params[key])}")
        check_value(factory, key, value, what)


def check_value(factory: Any, key: str, value: Any, what: str) -> None:
    """A number must be finite, and at least the least value the method declares (``minimums`` on
    the contract classes, e.g. ``epochs`` >= 1 for train-time defenses); any value must pass the
    method's own ``param_problem(name, value)`` where it has one (e.g. RIDE's ``loss_mask`` in (0, 1])."""
    problem = getattr(factory, "param_problem", None)
    reason = problem(key, value) if callable(problem) else None
    if reason:
        raise BenchError(f"{what}: {reason}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise BenchError(f"{what}: parameter {key} = {value} is not a finite number")
    least, why = getattr(factory, "minimums", {}).get(key, (None, ""))
    if least is not None and value < least:
        raise BenchError(f"{what}: parameter {key} = {value!r} must be at least {least}" + (f" ({why})" if why else ""))


def check_attack(name: str, params: dict[str, Any], where: str) -> None:
    import attacks

    cls = attacks.ATTACKS.get(name)
    own, _ = signature_params(cls)
    inner = params.get("attack", "pgd") if "attack" in own else None  # bpda / eot wrap pgd by default
    if isinstance(inner, str) and inner not in attacks.ATTACKS:
        raise BenchError(f"{where}: attack {name!r} wraps {attacks.ATTACKS.unknown_message(inner)}")
    if isinstance(inner, str) and inner in attacks.ATTACKS:  # a wrapper (bpda, eot): the rest goes inside
        inner_params, _ = signature_params(attacks.ATTACKS.get(inner))
        mine = {k: v for k, v in params.items() if k in own and k not in inner_params}
        check_params(cls, mine, f"{where}: attack {name!r}")
        rest = {k: v for k, v in params.items() if k not in mine and k != "attack"}
        check_params(attacks.ATTACKS.get(inner), rest, f"{where}: attack {name!r} (inner {inner!r})")
        return
    check_params(cls, params, f"{where}: attack {name!r}")


def check_spec(spec: Any) -> None:
    """Every method ``spec`` names is registered (an unknown name is refused with the closest valid
    one, unless its entry says ``optional = true``), and its hyperparameters fit its signature."""
    import attacks
    import defenses
    from bench.core.zoo import is_zoo_name
    from bench.spec import sources
    from bench.spec.dprime import check_db_attacks

    where = spec.path or spec.name
    skip = " (or add optional = true to the entry to skip it where the method is absent)"
    for table, kind in ((spec.train, "train"), (spec.runtime, "runtime")):
        for name, params in table.items():
            if kind == "train" and (is_zoo_name(name) or sources.is_provided(params)):
                continue
            if name not in defenses.DEFENSES:
                if (kind, name) in spec.optional:
                    continue
                raise BenchError(f"{where}: [{kind}.{name}]: {defenses.DEFENSES.unknown_message(name)}{skip}")
            if defenses.kind_of(name) != kind:
                other = "runtime" if kind == "train" else "train"
                raise BenchError(f"{where}: [{kind}.{name}]: {name!r} is a {other}-time defense; "
                                 f"list it as [{other}.{name}]")
            if kind == "runtime":
                params = check_db_attacks(name, params, f"{where}: [{kind}.{name}]")
            check_params(defenses.DEFENSES.get(name), params, f"{where}: [{kind}.{name}]")
    for i, a in enumerate(spec.attacks):
        aw = f"{where}: attacks[{i}]"
        missing = [(reg, n) for reg, n in [(attacks.ATTACKS, a.name), *((defenses.DEFENSES, r) for r in a.runtime)]
                   if n not in reg]
        if missing and not a.optional:
            raise BenchError(f"{aw}: {missing[0][0].unknown_message(missing[0][1])}{skip}")
        if a.name in attacks.ATTACKS:
            check_attack(a.name, dict(a.params), aw)
        if a.surrogate:
            _check_surrogate(a.surrogate, aw)


def _check_surrogate(sur: dict[str, Any], where: str) -> None:
    """A transfer attack's surrogate: a registered architecture and train-time defense, valid params
    (a zoo model or a user's model is checked where it loads)."""
    import defenses
    from bench.core.models import ARCHS
    from bench.core.zoo import is_zoo_name
    from bench.spec import sources

    arch, name, params = sur.get("arch"), sur.get("defense", "standard"), sur.get("params", {})
    if arch is not None and (not isinstance(arch, str) or arch not in ARCHS):
        raise BenchError(f"{where}: surrogate {ARCHS.unknown_message(str(arch))}")
    if not isinstance(params, dict):
        raise BenchError(f"{where}: surrogate params must be a table, e.g. params = {{ epochs = 5 }}")
    if isinstance(name, str) and (is_zoo_name(name) or sources.is_provided(params)):
        return
    if not isinstance(name, str) or name not in defenses.DEFENSES:
        raise BenchError(f"{where}: surrogate {defenses.DEFENSES.unknown_message(str(name))}")
    check_params(defenses.DEFENSES.get(name), params, f"{where}: surrogate")
