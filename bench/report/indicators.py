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


def indicator_lines(records: list[dict[str, Any]]) -> list[str]:
    """Markdown lines to list under a leaderboard's table (empty when no indicator fired)."""
    rows: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r.get("status") == "ok" and int(r.get("indicators_fired") or 0) > 0:
            rows[(r.get("train_defense", ""), r.get("runtime_defense", ""))].append(r)
    if not rows:
        return []
    measured = sum(1 for r in records if r.get("status") == "ok" and "indicators" in r)
    lines = ["", f"Indicators of attack failure (Pintor et al., NeurIPS 2022) fired on "
                 f"{sum(len(v) for v in rows.values())} of {measured} measured cells; per row, the count over its "
                 "cells, then each cell's indicators with the remedy they name:"]
    for (train, runtime), cells in sorted(rows.items()):
        total = sum(int(r["indicators_fired"]) for r in cells)
        lines.append(f"- {train} + {runtime}: {total} fired")
        for r in sorted(cells, key=lambda r: r["key"]):
            fired = [(k, e) for k, e in (r.get("indicators") or {}).items() if e.get("fired")]
            what = "; ".join(f"{k.replace('_', ' ')} ({_value(k, e)}): {e.get('remedy', '')}" for k, e in fired)
            lines.append(f"  - {r['key']}: {what}")
    return lines
