"""Regression check of a grid's results against a stored baseline (for CI)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.core.cache import atomic_write_text
from bench.core.errors import BenchError


def baseline_from(records: list[dict[str, Any]]) -> dict[str, Any]:
    cells = {r["key"]: {"clean_acc": r["clean_acc"], "robust_acc": r["robust_acc"]}
             for r in records if r.get("status") == "ok"}
    return {"cells": dict(sorted(cells.items()))}


def write_baseline(records: list[dict[str, Any]], path: Path) -> None:
    atomic_write_text(Path(path), json.dumps(baseline_from(records), indent=2) + "\n")


def indicator_problems(rec: dict[str, Any]) -> list[str]:
    """A gradient-attack cell (every cell but a stream's: RMC-style defenses and stream attacks) must
    carry its indicators of attack failure (bench.run.indicators), each with a bool and a value."""
    if "per_point" in rec or "attacked" in rec or "n_attacked" in rec:
        return []
    if rec.get("indicators_error"):
        return [f"{rec['key']}: indicators of attack failure not computed ({rec['indicators_error']})"]
    ind = rec.get("indicators")
    if not isinstance(ind, dict) or not ind:
        return [f"{rec['key']}: no indicators of attack failure in the record"]
    bad = [k for k, v in ind.items() if not (isinstance(v, dict) and isinstance(v.get("fired"), bool)
                                             and isinstance(v.get("value"), (int, float)) and v.get("remedy"))]
    return [f"{rec['key']}: malformed indicator(s) {', '.join(bad)}"] if bad else []


def compare(records: list[dict[str, Any]], baseline_path: Path, tolerance_pts: float) -> list[str]:
    """Problems found: failed cells, cells missing from the results, drift beyond tolerance (points)."""
    path = Path(baseline_path)
    if not path.is_file():
        raise BenchError(f"baseline {path} not found; create it with `bench check --write-baseline`")
    try:
        base = json.loads(path.read_text())["cells"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise BenchError(f"baseline {path} is not a valid baseline file (expected {{\"cells\": {{...}}}})") from None
    by_key = {r["key"]: r for r in records}
    problems = []
    for r in records:
        if r.get("status") != "ok":
            problems.append(f"{r['key']}: cell failed ({r.get('error', '')})")
        else:
            problems += indicator_problems(r)
    for key, ref in base.items():
        rec = by_key.get(key)
        if rec is None:
            problems.append(f"{key}: missing from the results")
            continue
        if rec.get("status") != "ok":
            continue
        for metric in ("clean_acc", "robust_acc"):
            drift = 100 * (rec[metric] - ref[metric])
            if abs(drift) > tolerance_pts:
                problems.append(f"{key}: {metric} {100 * rec[metric]:.1f}% vs baseline {100 * ref[metric]:.1f}% "
                                f"({drift:+.1f} pts > {tolerance_pts:g})")
    return problems
