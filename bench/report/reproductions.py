"""``leaderboards/reproductions.md``: every paper number a published board quotes, beside ours, in one
place (issue 29). Read from each board's published records (``<grid>/records.jsonl``) through the
same board model the leaderboards render, so a number here is the number on the board.

Per board: how many of the paper's numbers have a cell of ours, and for how many the paper's number
lies inside our 95% Wilson interval; then each of them, ours with its interval and n beside the
paper's. "Outside" says where the two disagree beyond sampling noise at our n, not why: each board's
notes list the settings that differ from the paper.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.core.cache import atomic_write_text

PAGE = "reproductions.md"


def _tables(model: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(section label, table) for every table of a board model that can carry paper numbers."""
    out = [(str(tm.get("label")), t) for tm in model.get("threat_models", []) for t in tm.get("tables", [])]
    out += [("minimal-norm attacks", t) for t in model.get("minimal_norm") or []]
    if model.get("metrics"):
        out.append(("per-model metrics", model["metrics"]))
    return out


def reproduction_rows(model: dict[str, Any]) -> list[dict[str, Any]]:
    """Every cell of a board model that carries a paper number: section, row, column, ours (value and,
    for accuracies, the 95% interval), the paper's number and whether it lies inside our interval
    (None for metrics, which have no interval)."""
    out, seen = [], set()
    for section, table in _tables(model):
        for row in table.get("rows", []):
            name = f"{row.get('train-time')}/{row.get('runtime')}"
            for col, cell in row.items():
                if not (isinstance(cell, dict) and cell.get("ref") is not None
                        and cell.get("kind") in ("acc", "metric")):
                    continue
                key = (name, col, section)
                if key in seen:  # a column repeated across a threat model's tables
                    continue
                seen.add(key)
                acc = cell["kind"] == "acc"
                ci = cell.get("ci") if acc else None
                out.append({"threat": section, "row": name, "column": col, "kind": cell["kind"],
                            "ours": cell["value"], "ci": ci, "paper": float(cell["ref"]),
                            "inside": None if ci is None else not cell.get("outside", False)})
    return out


def _fmt(row: dict[str, Any]) -> str:
    ci = row["ci"]
    if row["kind"] == "metric":
        ours = f"{row['ours']:.3g}" if row["ours"] is not None else "-"
    else:
        ours = f"{100 * row['ours']:.1f}"
    if ci is not None:
        ours += f" [{math.floor(100 * ci[0]):d}–{math.ceil(100 * ci[1]):d}]"
    verdict = {True: "inside", False: "**outside**", None: "no interval"}[row["inside"]]
    return f"| {row['row']} | {row['column']} | {ours} | {row['paper']:g} | {verdict} |"


def board_section(name: str, model: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """Markdown lines for one board and its summary counts."""
    rows = reproduction_rows(model)
    inside = sum(1 for r in rows if r["inside"])
    judged = sum(1 for r in rows if r["inside"] is not None)
    summary = {"board": name, "numbers": len(rows), "judged": judged, "inside": inside, "n": model.get("n"),
               "source": model.get("reference_source") or "-", "wiring_check": bool(model.get("wiring_check"))}
    lines = [f"## [{name}]({name}.md)", "",
             f"Paper: {summary['source']}. n = {summary['n']} test points per cell (see the board for rows with "
             f"fewer). {inside} of the {judged} paper accuracies lie inside our 95% interval"
             + (f"; {len(rows) - judged} metrics (no interval) beside them." if judged < len(rows) else ".")
             + (" A wiring check, not a measurement." if summary["wiring_check"] else ""), ""]
    threats = sorted({r["threat"] for r in rows}, key=str)
    for threat in threats:
        if len(threats) > 1:
            lines += [f"### {threat}", ""]
        lines += ["| row | column | ours [95% interval] | paper | paper vs our interval |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [_fmt(r) for r in rows if r["threat"] == threat]
        lines.append("")
    return lines, summary


def render(boards: list[tuple[str, dict[str, Any]]]) -> str:
    """The page for (grid name, board model) pairs; boards without a paper number are left out."""
    sections, summaries = [], []
    for name, model in boards:
        lines, summary = board_section(name, model)
        if summary["numbers"]:
            sections += lines
            summaries.append(summary)
    head = ["# Paper numbers beside ours", "",
            "Every number of the seed papers a published board quotes, beside the board's own result from its "
            "records. *Inside*: the paper's number lies in our 95% Wilson interval, so at our n the two are not "
            "told apart; *outside*: they differ beyond sampling noise, for the reasons the board's notes give "
            "(every setting that differs from the paper is listed there). Regenerated with every "
            "`bench leaderboard --publish`.", "",
            "| board | paper numbers with a cell | accuracies inside our interval | n |",
            "| --- | --- | --- | --- |"]
    head += [f"| [{s['board']}](#{s['board']}) | {s['numbers']} | {s['inside']} of {s['judged']} | {s['n']} |"
             for s in summaries]
    return "\n".join([*head, "", *sections]).rstrip() + "\n"


def write_reproductions(folder: Path, load: Callable[[Path], list[dict[str, Any]]]) -> Path | None:
    """Rewrite ``folder/reproductions.md`` from every built-in grid's published records (read with
    ``load``, bench.track.results.load_records); None when no board quotes a paper number."""
    from bench.report.board import board
    from bench.spec import grid as grids

    folder = Path(folder)
    boards = []
    for name in grids.GRIDS.list_names():
        records = folder / name / "records.jsonl"
        if not records.is_file():
            continue
        try:
            spec = grids.load(name)
        except Exception:  # noqa: BLE001 - a grid that no longer loads keeps its board, not a summary
            continue
        if spec.reference:
            boards.append((name, board(load(records), spec)))
    if not boards:
        return None
    path = folder / PAGE
    atomic_write_text(path, render(boards))
    return path
