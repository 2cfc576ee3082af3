"""Leaderboard lines for the indicators of attack failure (Pintor et al., NeurIPS 2022) that the
runner stores per gradient-attack cell (``indicators``, ``indicators_fired``; bench.run.indicators).

Pure Python over result records: per table row (training defense + runtime defense), how many
indicators fired over its cells, and for each cell which ones, their value and the remedy each names.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

#: How an indicator's value reads (all are shares of the points it measured, except the noise one).
_SHARE = {"unavailable_gradients", "silent_success", "incomplete_optimisation", "transfer_failure",
          "unconstrained_failure"}


def _value(name: str, entry: dict[str, Any]) -> str:
    v, n = float(entry.get("value", 0.0)), entry.get("n")
    if name in _SHARE:
        return f"{100 * v:.0f}% of {n} points" if n is not None else f"{100 * v:.0f}% of points"
    return f"mean relative loss change {v:.2f}"


def indicator_rows(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The indicators that fired, as plain data (None when none fired): ``fired_cells`` of ``measured``
    cells; ``rows``, one per table row (``train``, ``runtime``, ``fired``: the count over its cells),
    each with its ``cells`` (``cell``: the key; ``indicators``: name, value as read, remedy)."""
    rows: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r.get("status") == "ok" and int(r.get("indicators_fired") or 0) > 0:
            rows[(r.get("train_defense", ""), r.get("runtime_defense", ""))].append(r)
    if not rows:
        return None
    out = []
    for (train, runtime), cells in sorted(rows.items()):
        out.append({"train": train, "runtime": runtime, "fired": sum(int(r["indicators_fired"]) for r in cells),
                     "cells": [{"cell": r["key"],
                                "indicators": [{"name": k.replace("_", " "), "value": _value(k, e),
                                                "remedy": e.get("remedy", "")}
                                               for k, e in (r.get("indicators") or {}).items() if e.get("fired")]}
                               for r in sorted(cells, key=lambda r: r["key"])]})
    return {"fired_cells": sum(len(v) for v in rows.values()),
            "measured": sum(1 for r in records if r.get("status") == "ok" and "indicators" in r), "rows": out}


def indicator_lines(records: list[dict[str, Any]]) -> list[str]:
    """Markdown lines to list under a leaderboard's table (empty when no indicator fired)."""
    found = indicator_rows(records)
    if found is None:
        return []
    lines = ["", f"Indicators of attack failure (Pintor et al., NeurIPS 2022) fired on "
                 f"{found['fired_cells']} of {found['measured']} measured cells; per row, the count over its "
                 "cells, then each cell's indicators with the remedy they name:"]
    for row in found["rows"]:
        lines.append(f"- {row['train']} + {row['runtime']}: {row['fired']} fired")
        for c in row["cells"]:
            what = "; ".join(f"{i['name']} ({i['value']}): {i['remedy']}" for i in c["indicators"])
            lines.append(f"  - {c['cell']}: {what}")
    return lines
