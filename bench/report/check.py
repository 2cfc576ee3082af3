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
