"""How records group into leaderboard rows (train-time x runtime defense) and combine into a row's
worst case: the per-example AND over every attack of one budget. Shared by the tables and the plots."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from bench.spec.grid import GridSpec
from bench.spec.labels import Budget, budget_of


def worst_case(per_example: list[str]) -> float | None:
    """Share of examples robust under every attack: AND over the per-example outcome strings."""
    joint = worst_outcomes(per_example)
    return None if not joint else joint.count("1") / len(joint)


def worst_outcomes(per_example: list[str]) -> str:
    """Per-example AND of outcome strings of the same examples ('' when empty or not aligned)."""
    if not per_example or len({len(s) for s in per_example}) != 1:
        return ""
    return "".join("1" if all(s[i] == "1" for s in per_example) else "0" for i in range(len(per_example[0])))


def table_rows(records: list[dict[str, Any]], spec: GridSpec | None) -> OrderedDict[tuple[str, str], list[dict]]:
    rows: OrderedDict[tuple[str, str], list[dict[str, Any]]] = OrderedDict()
    if spec is not None:
        for pair in spec.pairs():
            rows[pair] = []
    for r in records:
        if r.get("status") == "ok":
            rows.setdefault((r["train_defense"], r["runtime_defense"]), []).append(r)
    return rows


def budgets_in(records: list[dict[str, Any]]) -> list[Budget]:
    return sorted({b for r in records if r.get("status") == "ok" and (b := budget_of(r)) is not None},
                  key=lambda b: (b[0], b[1]))


def row_worst(recs: list[dict[str, Any]], budget: Budget) -> str:
    """Joint per-example outcomes under every attack of ``budget`` in one row ('' when none)."""
    return worst_outcomes([r.get("per_example", "") for r in recs if budget_of(r) == budget])
