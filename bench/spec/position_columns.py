"""A grid's ``[[positions]]`` tables: leaderboard columns "accuracy at stream position p".

The RMC paper's PGD-Skip tables (Wu, Yuan, Wu, ICML 2020: Table 5, supplement Tables 2-3) report
robustness after p test points, not over the whole stream. A ``[[positions]]`` table asks for that
column for stream cells (bench.core.stream_position: a window of ``window`` points starting after
p points of one stream, with a Wilson interval over the window's points)::

    [[positions]]
    p = [20, 40]                 # points seen before the window (the paper's p)
    window = 20                  # w: points per window
    attacks = ["skip-partial-30"]  # attack labels (default: every attack of the grid)
    runtime = ["rmc-plus"]       # runtime defenses (default: every row)

An attack with an integer ``q`` parameter (PGD-Skip-Delayed) attacks x^(p+q+1) with the weights of
position p, so its window starts after p + q points. The column is ``"<attack label> @ p=<p>"``
(``"skip-partial-30 (adaptive) @ p=20"``); ``[reference]`` keys are ``"<train>/<runtime>/<column>"``.
"""

from __future__ import annotations

from typing import Any

from bench.core.errors import BenchError

POSITION_KEYS = {"p", "window", "attacks", "runtime"}


def column(attack_label: str, p: int) -> str:
    """The leaderboard column of ``attack_label`` (with its threat, as bench.spec.labels.attack_label) at p."""
    return f"{attack_label} @ p={p}"


def delay_of(params: dict[str, Any]) -> int:
    """The attacker's delay q of an attack's parameters (PGD-Skip-Delayed), 0 for any other attack."""
    q = params.get("q", 0)
    return q if isinstance(q, int) and not isinstance(q, bool) else 0


def _int_at_least(v: Any, least: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= least


def check_positions(raw: Any, where: str, attacks: list[Any], stream_len: Any) -> tuple[dict[str, Any], ...]:
    """Validate ``[[positions]]`` against the grid's attacks (AttackSpec) and ``stream_len(runtime)``
    (the stream's points for a runtime defense, None when unknown); one clear line per mistake."""
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise BenchError(f"{where}: positions must be an array of tables ([[positions]])")
    labels = {a.label or a.name: a for a in attacks}
    out = []
    for i, t in enumerate(raw):
        pw = f"{where}: positions[{i}]"
        extra = set(t) - POSITION_KEYS
        if extra:
            raise BenchError(f"{pw}: unknown keys {', '.join(sorted(extra))}; "
                             f"valid: {', '.join(sorted(POSITION_KEYS))}")
        ps = t.get("p")
        ps = [ps] if _int_at_least(ps, 0) else ps
        if not isinstance(ps, list) or not ps or not all(_int_at_least(p, 0) for p in ps):
            raise BenchError(f"{pw}: p must be a list of integers >= 0 (points seen before the window), "
                             f"e.g. p = [20, 40], got {t.get('p')!r}")
        w = t.get("window")
        if not _int_at_least(w, 1):
            raise BenchError(f"{pw}: window must be a positive integer (points per window), got {w!r}")
        for key in ("attacks", "runtime"):
            v = t.get(key, [])
            if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
                raise BenchError(f"{pw}: {key} must be a list of names, e.g. {key} = [\"rmc-plus\"]")
        unknown = [a for a in t.get("attacks", []) if a not in labels]
        if unknown:
            raise BenchError(f"{pw}: attack {unknown[0]!r} is not an attack label of this grid; "
                             f"use one of {', '.join(sorted(labels))}")
        chosen = [labels[a] for a in t.get("attacks", [])] or list(labels.values())
        for a in chosen:
            for rt in a.runtime or t.get("runtime") or [None]:
                n = stream_len(rt)
                q = delay_of(a.params)
                if n is not None and max(ps) + q >= n:
                    after = f"p + q = {max(ps)} + {q}" if q else f"p = {max(ps)}"
                    raise BenchError(f"{pw}: {after} leaves no point of the {n}-point stream of "
                                     f"{a.label or a.name}; use p < {n - q}")
        out.append({"p": sorted(set(ps)), "window": w, "attacks": list(t.get("attacks", [])),
                    "runtime": list(t.get("runtime", []))})
    return tuple(out)


def position_columns(spec: Any, runtime: str) -> list[tuple[str, Any, int, int]]:
    """(column, AttackSpec, p, window) of the grid's position columns for one runtime defense's row."""
    out: dict[str, tuple[tuple[int, int], tuple[str, Any, int, int]]] = {}
    for t in getattr(spec, "positions", ()):
        if t["runtime"] and runtime not in t["runtime"]:
            continue
        for i, a in enumerate(spec.attacks):
            if (t["attacks"] and (a.label or a.name) not in t["attacks"]) or (a.runtime and runtime not in a.runtime):
                continue
            label = a.label or a.name if a.threat == "base" else f"{a.label or a.name} ({a.threat})"
            for p in t["p"]:
                out.setdefault(column(label, p), ((i, p), (column(label, p), a, p, t["window"])))
    return [entry for _, entry in sorted(out.values(), key=lambda e: e[0])]  # grid's attack order, then p
