"""Leaderboard tables "accuracy at stream position p" (a grid's ``[[positions]]``, bench.spec.position_columns).

One table per budget: a row per (train-time, runtime) pair with stream cells, a column per attack and
p; each cell is the accuracy over a window of w points starting after p points of the cell's single
stream (after p + q for PGD-Skip-Delayed), with its 95% Wilson interval over the window's points and
the seed paper's number when ``[reference]`` gives one (RMC, ICML 2020: Table 5, supplement Table 3).
A window cut short by the stream's end is marked ``CLIPPED`` and listed in the table's notes.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from bench.core.errors import BenchError
from bench.core.stream_position import record_accuracy_at
from bench.report.board import MAX_COLUMNS, ROW_COLUMNS, _chunks, acc_cell, ok_records
from bench.report.rows import table_rows
from bench.spec.grid import GridSpec
from bench.spec.labels import attack_label, budget_label, budget_of
from bench.spec.position_columns import delay_of, position_columns

CLIPPED = " ✂"

EXPLAIN = ("Accuracy at stream position p: the share of correct predictions on the w points at stream positions "
           "p+1 .. p+w of the cell's one stream (p+q+1 .. p+q+w for PGD-Skip-Delayed, whose point is attacked "
           "q positions after the weights it used), with a 95% Wilson interval over those w points. A window of "
           "one stream, not position p averaged over several shuffled streams; the RMC paper's numbers are at "
           f"the single position p. {CLIPPED.strip()}: the stream ended before the window did, fewer points.")


def position_tables(records: list[dict[str, Any]], spec: GridSpec | None) -> list[dict[str, Any]]:
    """The board's position tables (``{"title", "columns", "rows", "notes"}``); empty when the grid
    declares no ``[[positions]]`` or no record keeps per-point results."""
    if spec is None or not getattr(spec, "positions", ()):
        return []
    ok = ok_records(records)
    budgets = list(OrderedDict.fromkeys(budget_of(r) for r in ok if (r.get("per_point") or {}).get("correct")))
    tables = []
    for budget in budgets:
        columns: OrderedDict[str, None] = OrderedDict()
        rows, notes, short = [], [], []  # short: columns whose window starts beyond the stream
        for (train, runtime), recs in table_rows(ok, spec).items():
            mine = {attack_label(r): r for r in recs if budget_of(r) == budget}
            row: dict[str, Any] = {"train-time": train, "runtime": runtime}
            for col, a, p, w in position_columns(spec, runtime):
                rec = mine.get(attack_label({"attack": a.label or a.name, "threat": a.threat}))
                if rec is None:
                    continue
                try:
                    win = record_accuracy_at(rec, p, w, delay_of(a.params))
                except BenchError:  # a --limit (or --smoke) shorter than the grid's stream: no point after p
                    short.append(f"{train}/{runtime} {col}")
                    continue
                if win is None:
                    continue
                columns[col] = None
                cell = acc_cell(win.accuracy, win.ci, spec.reference.get(f"{train}/{runtime}/{col}"))
                if win.clipped and isinstance(cell, dict):
                    cell["clipped"] = True
                    notes.append(f"{train}/{runtime} {col}: window clipped to positions {win.start + 1}-{win.end} "
                                 f"({win.n} of {w} points; the stream has {len(rec['per_point']['correct'])})")
                row[col] = cell
            if len(row) > len(ROW_COLUMNS):
                rows.append(row)
        if short:
            notes.append(f"{len(short)} column(s) not shown, their window starts beyond the stream (a run with "
                         f"--limit or --smoke keeps fewer points than the grid): {short[0]}"
                         + (f" and {len(short) - 1} more" if len(short) > 1 else ""))
        if not rows:
            if short:
                tables.append({"title": "accuracy at stream position p", "columns": [*ROW_COLUMNS], "rows": [],
                               "notes": notes})
            continue
        windows = sorted({t["window"] for t in spec.positions})
        notes.insert(0, f"window w = {', '.join(map(str, windows))} points")
        title = "accuracy at stream position p" + (f", {budget_label(budget)}" if budget is not None else "")
        parts = _chunks(list(columns), MAX_COLUMNS - len(ROW_COLUMNS))
        for j, part in enumerate(parts):
            part_rows = [r for r in rows if any(c in r for c in part)]
            tables.append({"title": title + (f" ({j + 1} of {len(parts)})" if len(parts) > 1 else ""),
                           "columns": [*ROW_COLUMNS, *part], "rows": part_rows,
                           "notes": notes if j == len(parts) - 1 else []})
    return tables


def position_lines(tables: list[dict[str, Any]], markdown_table: Any) -> list[str]:
    """The board's Markdown section for ``position_tables`` (``markdown_table`` renders one table)."""
    lines = ["## Accuracy at stream position p", "", EXPLAIN, ""]
    for t in tables:
        lines += [f"### {t['title']}", ""] + ([markdown_table(t), ""] if t["rows"] else [])
        lines += [f"- {n}" for n in t["notes"]] + ([""] if t["notes"] else [])
    return lines
