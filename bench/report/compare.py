"""A local run against the published board of the same grid: one line for the end of ``bench run``.

A row is the headline row (train-time x runtime defense, worst case under the main threat model).
It agrees when the local worst case lies inside the published 95% Wilson interval, or, outside it,
when an exact McNemar test on the same examples (both runs evaluate the grid's first n test points
in the same order) finds the two not distinguishable at p >= 0.05. Runs on another CPU or GPU differ
by a few examples (floating-point order in training and attacks), which is what the intervals absorb.

Published records (``leaderboards/<grid>/records.jsonl``, written by ``bench leaderboard --publish``)
give the exact interval and the paired test; a published board without them is read from its
headline table (interval as printed, rounded outward; no paired test).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bench.core.stats import mcnemar
from bench.report.board import ALPHA, headline_rows, main_budget, ok_records
from bench.spec.grid import GridSpec
from bench.spec.labels import Budget, budget_label


def compare_records(local: list[dict[str, Any]], published: list[dict[str, Any]],
                    spec: GridSpec | None) -> dict[str, Any]:
    """Row by row: {"budget", "rows", "inside", "indistinct", "differ", "missing", "n_local", "n_published"}."""
    budget = main_budget(ok_records(published), spec) or main_budget(ok_records(local), spec)
    out: dict[str, Any] = {"budget": budget, "rows": 0, "inside": [], "indistinct": [], "differ": [], "missing": [],
                           "n_local": _n(local), "n_published": _n(published)}
    if budget is None:
        return out
    theirs = {(h["train-time"], h["runtime"]): h for h in headline_rows(published, spec, budget)}
    for h in headline_rows(local, spec, budget):
        row = f"{h['train-time']}/{h['runtime']}"
        out["rows"] += 1
        pub = theirs.get((h["train-time"], h["runtime"]))
        if pub is None or not isinstance(pub["worst"], dict):
            out["missing"].append(row)
            continue
        acc, (lo, hi) = h["worst"]["value"], pub["worst"]["ci"]
        if lo - 1e-12 <= acc <= hi + 1e-12:
            out["inside"].append(row)
            continue
        a, b = h["outcomes"], pub["outcomes"]
        p = mcnemar(a, b)[2] if len(a) == len(b) else 0.0
        (out["indistinct"] if p >= ALPHA else out["differ"]).append(
            (row, acc, pub["worst"]["value"], p if len(a) == len(b) else None))
    return out


def _n(records: list[dict[str, Any]]) -> int:
    return max((int(r["n"]) for r in ok_records(records)), default=0)


HEADLINE_ROW = re.compile(r"^\|")
ACC = re.compile(r"^\s*([0-9.]+) \[([0-9]+)–([0-9]+)\]")


def parse_headline(markdown: str) -> tuple[str, int | None, dict[tuple[str, str], tuple[float, float, float]]]:
    """(budget label, n, row -> (acc, lo, hi) in [0, 1]) from a published board's first headline
    table (this layout's or the older one); ('', None, {}) when it has none."""
    lines = markdown.splitlines()
    n_match = re.search(r"n=(\d+)", lines[0]) if lines else None
    n = int(n_match.group(1)) if n_match else None
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith("## Headline"))
    except StopIteration:
        return "", n, {}
    table = []
    for line in lines[start + 1:]:
        if HEADLINE_ROW.match(line):
            table.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif table:
            break
    if len(table) < 3:
        return "", n, {}
    head = table[0]
    worst = next((i for i, c in enumerate(head) if c.startswith("worst ")), None)
    if worst is None or "train-time" not in head or "runtime" not in head:
        return "", n, {}
    ti, ri = head.index("train-time"), head.index("runtime")
    rows = {}
    for cells in table[2:]:
        m = ACC.match(cells[worst]) if len(cells) > worst else None
        if m:
            rows[(cells[ti], cells[ri])] = (float(m.group(1)) / 100, int(m.group(2)) / 100, int(m.group(3)) / 100)
    return head[worst][len("worst "):], n, rows


def compare_markdown(local: list[dict[str, Any]], markdown: str, spec: GridSpec | None) -> dict[str, Any]:
    """As ``compare_records``, against a published board's headline table (no paired test)."""
    label, n_pub, theirs = parse_headline(markdown)
    out: dict[str, Any] = {"budget": None, "rows": 0, "inside": [], "indistinct": [], "differ": [], "missing": [],
                           "n_local": _n(local), "n_published": n_pub or 0}
    budget = next((b for b in {main_budget(ok_records(local), spec)} if b and budget_label(b) == label), None)
    if budget is None:
        budget = _budget_of_label(label, local)
    if budget is None:
        return out
    out["budget"] = budget
    for h in headline_rows(local, spec, budget):
        row = f"{h['train-time']}/{h['runtime']}"
        out["rows"] += 1
        pub = theirs.get((h["train-time"], h["runtime"]))
        if pub is None:
            out["missing"].append(row)
        elif pub[1] - 1e-9 <= h["worst"]["value"] <= pub[2] + 1e-9:
            out["inside"].append(row)
        else:
            out["differ"].append((row, h["worst"]["value"], pub[0], None))
    return out


def _budget_of_label(label: str, records: list[dict[str, Any]]) -> Budget | None:
    from bench.report.rows import budgets_in

    return next((b for b in budgets_in(records) if budget_label(b) == label), None)


def comparison_line(result: dict[str, Any] | None, published: str) -> str:
    """``agrees with leaderboards/default.md: 14 of 14 rows inside the intervals`` and the like."""
    if result is None:
        return "no published board to compare"
    if result["n_published"] and result["n_local"] and result["n_published"] != result["n_local"]:
        return (f"not compared with {published}: it has {result['n_published']} test examples per cell, this run "
                f"{result['n_local']} (--limit)")
    if result["budget"] is None or not result["rows"]:
        return f"not compared with {published}: no headline row in common"
    k, inside = result["rows"], len(result["inside"])
    agrees = not result["differ"] and not result["missing"]
    text = (f"{'agrees with' if agrees else 'differs from'} {published}: {inside} of {k} rows inside the published "
            f"95% intervals (worst case under {budget_label(result['budget'])})")
    if result["indistinct"]:
        text += (f", {len(result['indistinct'])} outside but not distinguishable by an exact McNemar test "
                 f"(p >= {ALPHA}): " + ", ".join(r[0] for r in result["indistinct"]))
    if result["differ"]:
        text += f", {len(result['differ'])} differ: " + ", ".join(
            f"{row} ({100 * acc:.1f}% here, {100 * pub:.1f}% published"
            + (f", McNemar p = {p:.2g})" if p is not None else ")") for row, acc, pub, p in result["differ"])
    if result["missing"]:
        text += f", {len(result['missing'])} not on the published board: {', '.join(result['missing'])}"
    return text


def compare_with_published(local: list[dict[str, Any]], spec: GridSpec, folder: Path,
                           published_records: list[dict[str, Any]] | None) -> str:
    """The comparison line for a local run of ``spec`` against ``folder/<grid>.md`` (and its records)."""
    md = folder / f"{spec.name}.md"
    if not md.is_file():
        return "no published board to compare"
    if published_records:
        return comparison_line(compare_records(local, published_records, spec), str(md))
    return comparison_line(compare_markdown(local, md.read_text(encoding="utf-8"), spec), str(md))
