"""A static leaderboard site: one self-contained HTML page per board plus an index, in the manner of
RobustBench's (Croce et al., NeurIPS 2021 Datasets and Benchmarks) and MultiRobustBench's (Dai et
al., ICML 2023) leaderboard sites: sortable columns, a threat-model selector, the seed paper's
numbers beside ours, 95% intervals, and the figures inline.

A page is drawn from the same plain-data board as ``leaderboards/<grid>.md`` (``board()`` in
bench.report.board): each cell is the board's cell dict, printed by its ``fmt_cell`` and sorted by its
``sort_value``, so a page and the Markdown board never disagree. Pages carry their CSS, script and
pictures (base64 PNG) inline and reference nothing outside themselves: they open from a file or any
static host with no network access.

``board_model`` (plain dicts and lists, no pandas) is the data model of one page; ``write_site`` turns
a list of them into files.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.report.board import CLEAN_DROP, DROP, FLAG, OUTSIDE, ROW_COLUMNS, VS_NEXT, fmt_cell, sort_value
from bench.report.findings import finding_text
from bench.report.leaderboard import headline_note
from bench.report.position_tables import EXPLAIN as POSITIONS_EXPLAIN
from bench.spec.grid import GridSpec

INDEX = "index.html"
RECORDS = "records.jsonl"
TEXT_COLUMNS = (*ROW_COLUMNS, VS_NEXT)
HEADLINE_COLUMNS = ("rank", *ROW_COLUMNS, "clean")
MINIMAL = "minimal-norm attacks"
METRICS = "per-model metrics"
# The parts of an accuracy cell in the order fmt_cell prints them, each with the page's CSS class:
# a part is what fmt_cell adds when the cell gains that key.
_ACC_PARTS = (("ci", ("ci",)), ("spread", ("spread",)), ("paper", ("ref", "outside")), ("clip", ("clipped",)),
              ("flag", ("flag",)), ("drop", ("drop",)))


@dataclass
class BoardInput:
    """What one page is built from: the grid, its records, the hand-written notes and the folder of
    extra pictures (``bench plot``'s grid figures), all optional but the first two."""

    spec: GridSpec
    records: list[dict[str, Any]]
    notes: str | None = None
    figures_dir: Path | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def records_source(name: str, results_dir: Path | None, boards_dir: Path | None) -> Path | None:
    """Where a board's records are: ``<results_dir>/<name>.jsonl`` (a local run) first, then the
    published ``<boards_dir>/<name>/records.jsonl``; None when neither exists."""
    for path in ((Path(results_dir) / f"{name}.jsonl") if results_dir else None,
                 (Path(boards_dir) / name / RECORDS) if boards_dir else None):
        if path is not None and path.is_file():
            return path
    return None


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _acc_parts(cell: dict[str, Any], text: str) -> list[list[str]]:
    """[css class, text] pieces of an accuracy cell whose texts join to ``text``: each piece is what
    ``fmt_cell`` adds for one more key of the cell, so the page styles the board's own text. A cell
    with a part this list does not know (a later marker) is one piece, printed as the board prints it."""
    partial: dict[str, Any] = {"kind": "acc", "value": cell["value"]}
    shown = fmt_cell(partial)
    parts = [["v", shown]]
    for cls, keys in _ACC_PARTS:
        partial.update({k: cell[k] for k in keys if k in cell})
        longer = fmt_cell(partial)
        if longer != shown and longer.startswith(shown):
            parts.append(["paper outside" if cls == "paper" and cell.get("outside") else cls, longer[len(shown):]])
        shown = longer
    return parts if "".join(t for _, t in parts) == text else [["v", text]]


def site_cell(cell: Any) -> dict[str, Any]:
    """A board cell (bench.report.board) as the page shows it: ``text`` (``fmt_cell``), ``value`` (its
    ``sort_value`` when a number, else None), and for an accuracy ``lo``/``hi`` (the 95% interval in
    %), ``ref`` (the paper's number, %), ``outside`` (that number outside our interval), ``flag``."""
    text = fmt_cell(cell)
    out: dict[str, Any] = {"text": text, "value": _number(sort_value(cell))}
    if isinstance(cell, dict) and cell.get("kind") == "acc":
        if cell.get("ci") is not None:
            out["lo"], out["hi"] = round(100 * cell["ci"][0], 4), round(100 * cell["ci"][1], 4)
        out.update(ref=cell.get("ref"), outside=bool(cell.get("outside")), flag=bool(cell.get("flag")),
                   parts=_acc_parts(cell, text))
    elif isinstance(cell, dict):
        out["ref"] = cell.get("ref")
    return out


def site_table(table: dict[str, Any], table_id: str, drop_suffix: str = "") -> dict[str, Any]:
    """A board table (``{"title", "columns", "rows"}``, a row a dict column -> cell) as the page's
    ``{id, title, columns, headers, types, rows}``, a row a list of ``site_cell``; ``drop_suffix``
    leaves the section's budget out of the headers (narrower tables)."""
    cols = [str(c) for c in table["columns"]]
    return {"id": table_id, "title": table.get("title", ""), "columns": cols,
            "headers": [c.removesuffix(drop_suffix) if drop_suffix else c for c in cols],
            "types": ["text" if c in TEXT_COLUMNS else "num" for c in cols],
            "rows": [[site_cell(row.get(c, "-")) for c in cols] for row in table["rows"]],
            "notes": list(table.get("notes") or [])}


def _headline_table(tm: dict[str, Any], table_id: str) -> dict[str, Any] | None:
    """A threat model's headline (bench.report.board.headline_rows) as a table, the Markdown board's columns."""
    if not tm["headline"]:
        return None
    worst = f"worst {tm['label']}"
    table = {"columns": [*HEADLINE_COLUMNS, worst, "attacks", VS_NEXT],
             "rows": [{**h, worst: h["worst"]} for h in tm["headline"]]}
    return site_table(table, table_id, f" {tm['label']}")


def board_model(data: dict[str, Any] | BoardInput, notes: str = "", source: str = "",
                cells: int | None = None) -> dict[str, Any]:
    """One page's content as plain data, from ``board(records, spec)`` (bench.report.board): meta, one
    group per threat model (its headline and its tables, main threat model first), then the
    minimal-norm attacks and per-model metrics, the position tables, flags, indicators, findings,
    failed cells, notes and the Reproduce line. Given a ``BoardInput``, builds that board first."""
    if isinstance(data, BoardInput):
        return page_model(data)
    groups = []
    for tm in data["threat_models"]:
        gid, suffix = _slug(tm["label"]), f" {tm['label']}"
        groups.append({"id": gid, "label": tm["label"], "budget": tm["budget"], "main": tm["main"],
                       "headline": _headline_table(tm, f"headline-{gid}"),
                       "tables": [site_table(t, f"table-{gid}-{k + 1}", suffix) for k, t in enumerate(tm["tables"])]})
    if data["minimal_norm"]:
        groups.append({"id": "minimal-norm", "label": MINIMAL, "budget": None, "main": False, "headline": None,
                       "tables": [site_table(t, f"table-minimal-norm-{k + 1}")
                                  for k, t in enumerate(data["minimal_norm"])]})
    if data["metrics"]:
        groups.append({"id": "metrics", "label": METRICS, "budget": None, "main": False, "headline": None,
                       "tables": [site_table(data["metrics"], "table-metrics-1")]})
    main = next((tm for tm in data["threat_models"] if tm["main"]), None)
    top = None
    if main is not None and main["headline"]:
        first = main["headline"][0]
        top = {"row": f"{first['train-time']}/{first['runtime']}", "worst": fmt_cell(first["worst"])}
    versions = data["versions"]
    return {
        "name": data["grid"],
        "description": data["description"],
        "dataset": data["dataset"],
        "arch": data["arch"],
        "wiring_check": data["wiring_check"],
        "n": data["n"],
        "seeds": [str(s) for s in data["seeds"]],
        "code_versions": versions or ["-"],
        "devices": data["devices"] or ["-"],
        "date": data["date"] or "-",
        "cells": cells if cells is not None else 0,
        "main_budget": main["label"] if main is not None else None,
        "top": top,
        "groups": groups,
        "default_group": groups[0]["id"] if groups else None,
        "footer": headline_note(data) if data["threat_models"] else "",
        "reference_source": data["reference_source"],
        "positions": [site_table(t, f"positions-{k + 1}") for k, t in enumerate(data.get("positions") or [])],
        "baseline": "/".join(data["baseline"]) if data["baseline"] else None,
        "clean_drops": data["clean_drops"],
        "flags": [{"key": f["cell"], "why": f["reasons"]} for f in data["flags"]],
        "versions_note": data["versions_note"],
        "indicators": data.get("indicators"),
        "failed": [{"key": f["cell"], "error": str(f["error"])} for f in data["failed"]],
        "notes": notes or "",
        "source": source,
        "reproduce": data["reproduce"],
        "findings": data["findings"],
    }


def page_model(page: BoardInput) -> dict[str, Any]:
    """``board_model`` of the board of ``page``'s records and grid, with its notes and source."""
    from bench.report.board import board, pool_seeds

    cells = sum(1 for r in pool_seeds(page.records) if r.get("status") == "ok")
    return board_model(board(page.records, page.spec), notes=page.notes or "", source=page.source, cells=cells)


def board_figures(board: BoardInput, model: dict[str, Any]) -> list[tuple[str, str]]:
    """(title, base64 PNG) of the board's pictures: drawn afresh from the records by
    bench.report.plots, then any other PNG in ``board.figures_dir`` (the grid's own figures)."""
    from bench.report.board import main_budget, pool_seeds
    from bench.report.plots import write_figures

    ok = [r for r in pool_seeds(board.records) if r.get("status") == "ok"]  # a multi-seed grid: pooled cells
    out: list[tuple[str, str]] = []
    drawn: set[str] = set()
    if ok:
        with tempfile.TemporaryDirectory(prefix="bench-site-") as tmp:
            budget = main_budget(ok, board.spec)
            for title, path in write_figures(ok, board.spec, Path(tmp), budget):
                drawn.add(path.name)
                out.append((title, base64.b64encode(path.read_bytes()).decode("ascii")))
    if board.figures_dir is not None and Path(board.figures_dir).is_dir():
        for png in sorted(Path(board.figures_dir).glob("*.png")):
            if png.name not in drawn:
                out.append((png.stem.replace("_", " "), base64.b64encode(png.read_bytes()).decode("ascii")))
    return out


# ---------------------------------------------------------------------------------------------- HTML

_CSS = """
:root { --fg:#1d2330; --muted:#5b6475; --line:#d9dee7; --head:#eef2f8; --accent:#2f5d9a; --warn:#a04000; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       margin: 0 auto; max-width: 1200px; padding: 1.2em 1.5em 3em; }
h1 { font-size: 1.6em; margin: 0.2em 0 0.3em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
a { color: var(--accent); }
.meta, .note, footer { color: var(--muted); }
.badge { display: inline-block; background: var(--warn); color: #fff; border-radius: 3px; padding: 0 0.4em;
         font-size: 0.8em; vertical-align: middle; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 0.6em 0; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid var(--line); padding: 0.3em 0.6em; text-align: right; white-space: nowrap; }
th { background: var(--head); position: sticky; top: 0; }
th.sortable { cursor: pointer; user-select: none; }
th.sortable::after { content: " \\2195"; color: #9aa3b2; }
th[aria-sort="ascending"]::after { content: " \\25B2"; color: var(--fg); }
th[aria-sort="descending"]::after { content: " \\25BC"; color: var(--fg); }
td.text, th.text { text-align: left; }
td.wrap { white-space: normal; min-width: 14em; max-width: 30em; }
tbody tr:hover { background: #f6f8fb; }
.ci { color: var(--muted); font-size: 0.85em; }
.paper { color: #6a4c93; font-size: 0.85em; }
.paper.outside { color: var(--warn); font-weight: 600; }
.flag, .drop { color: var(--warn); }
.spread, .clip { color: var(--muted); font-size: 0.85em; }
h4 { margin: 1.2em 0 0.2em; }
.controls { margin: 0.8em 0; }
.controls select { font: inherit; padding: 0.2em 0.4em; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 0.9em; }
pre, code { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.92em; }
pre { background: #f6f8fb; padding: 0.6em; overflow-x: auto; }
.notes { border-top: 1px solid var(--line); margin-top: 2em; }
"""

# Sorting: numbers by their data-v value ('-' and text last, whichever the direction); the first click
# on a numeric column sorts descending (best first), on a text column ascending.
_JS = """
(function () {
  function key(td) {
    var v = td.getAttribute('data-v');
    return v === null || v === '' ? null : parseFloat(v);
  }
  function sortBy(th) {
    var table = th.closest('table'), body = table.tBodies[0];
    var i = Array.prototype.indexOf.call(th.parentNode.children, th);
    var numeric = th.getAttribute('data-type') === 'num';
    var current = th.getAttribute('aria-sort');
    var dir = current ? (current === 'ascending' ? -1 : 1) : (numeric ? -1 : 1);
    var rows = Array.prototype.slice.call(body.rows);
    rows.forEach(function (r, j) { r.setAttribute('data-pos', j); });
    rows.sort(function (a, b) {
      var ca = a.cells[i], cb = b.cells[i], r;
      if (numeric) {
        var x = key(ca), y = key(cb);
        if (x === null || y === null) { r = (x === null) - (y === null); return r; }
        r = dir * (x - y);
      } else {
        r = dir * ca.textContent.trim().localeCompare(cb.textContent.trim());
      }
      return r || (a.getAttribute('data-pos') - b.getAttribute('data-pos'));
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.prototype.forEach.call(th.parentNode.children, function (h) { h.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', dir > 0 ? 'ascending' : 'descending');
  }
  document.querySelectorAll('th.sortable').forEach(function (th) {
    th.addEventListener('click', function () { sortBy(th); });
    th.addEventListener('keydown', function (e) { if (e.key === 'Enter') { sortBy(th); } });
  });
  var select = document.getElementById('threat-model');
  if (select) {
    var show = function (id) {
      document.querySelectorAll('section.threat-model').forEach(function (s) { s.hidden = s.id !== 'tm-' + id; });
      select.value = id;
    };
    select.addEventListener('change', function () {
      show(select.value);
      if (history.replaceState) { history.replaceState(null, '', '#' + select.value); }
    });
    var wanted = decodeURIComponent(location.hash.slice(1));
    show(document.getElementById('tm-' + wanted) ? wanted : select.value);
  }
})();
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _page(title: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            # No network at view time: nothing may load from anywhere but this file.
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
            "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">\n"
            f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n"
            f"<script>{_JS}</script>\n</body>\n</html>\n")


_PART_TITLE = {"ci": "95% Wilson interval", "spread": "spread over seeds {min–max}", "paper": "paper's number",
               "paper outside": "paper's number, outside our 95% interval",
               "clip": "window cut short by the stream's end", "flag": "reliability flag: see below",
               "drop": f"clean accuracy more than {100 * CLEAN_DROP:.0f} points below the undefended model's"}


def _cell_html(cell: dict[str, Any], text_col: bool) -> str:
    if text_col:
        return f"<td class=\"text\">{_e(cell['text'])}</td>"
    v = cell["value"]
    data_v = "" if v is None else f" data-v=\"{'1e308' if math.isinf(v) else repr(v)}\""
    parts = cell.get("parts")
    if not parts:
        return f"<td{data_v}>{_e(cell['text'])}</td>"
    spans = "".join(f"<span class=\"{cls}\"" + (f" title=\"{_PART_TITLE[cls]}\"" if cls in _PART_TITLE else "")
                    + f">{_e(text)}</span>" for cls, text in parts)
    return f"<td{data_v}>{spans}</td>"


def _table_html(table: dict[str, Any]) -> str:
    cols = table["columns"]
    text = [t == "text" for t in table["types"]]
    head = "".join(f"<th class=\"sortable{' text' if t else ''}\" data-type=\"{'text' if t else 'num'}\" "
                   f"data-col=\"{_e(c)}\" title=\"{_e(c)}\" tabindex=\"0\" scope=\"col\">{_e(h)}</th>"
                   for c, h, t in zip(cols, table["headers"], text))
    body = "\n".join("<tr>" + "".join(_cell_html(cell, t) for cell, t in zip(row, text)) + "</tr>"
                     for row in table["rows"])
    return (f"<div class=\"scroll\"><table id=\"{_e(table['id'])}\" class=\"board\">\n"
            f"<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table></div>")


def inline(text: str) -> str:
    """Escaped text with Markdown's `code` and **bold**."""
    text = _e(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


def markdown_html(text: str) -> str:
    """The hand-written notes (a small Markdown subset: headings, paragraphs, lists, indented or
    fenced code, `code`, **bold**) as HTML; everything else stays literal text."""
    out: list[str] = []
    para: list[str] = []
    items: list[str] = []
    code: list[str] | None = None

    def flush() -> None:
        if para:
            out.append(f"<p>{inline(' '.join(para))}</p>")
            para.clear()
        if items:
            out.append("<ul>" + "".join(f"<li>{inline(i)}</li>" for i in items) + "</ul>")
            items.clear()

    fenced = False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            if fenced:
                out.append(f"<pre>{_e(chr(10).join(code or []))}</pre>")
                code, fenced = None, False
            else:
                flush()
                code, fenced = [], True
            continue
        if fenced:
            assert code is not None
            code.append(line)
            continue
        if line.startswith("    ") and not items and not para:
            code = code if code is not None else []
            code.append(line[4:])
            continue
        if code is not None:
            out.append(f"<pre>{_e(chr(10).join(code))}</pre>")
            code = None
        if m := re.match(r"^(#{1,6})\s+(.*)$", line):
            flush()
            level = min(len(m.group(1)) + 1, 6)  # the page's own title is the only h1
            out.append(f"<h{level}>{inline(m.group(2))}</h{level}>")
        elif m := re.match(r"^\s*[-*]\s+(.*)$", line):
            if para:
                flush()
            items.append(m.group(1))
        elif not line.strip():
            flush()
        elif items and line.startswith(" "):
            items[-1] += " " + line.strip()
        else:
            if items:
                flush()
            para.append(line.strip())
    if code:
        out.append(f"<pre>{_e(chr(10).join(code))}</pre>")
    flush()
    return "\n".join(out)


def _wiring(model: dict[str, Any]) -> str:
    return " <span class=\"badge\">wiring check</span>" if model.get("wiring_check") else ""


def _findings_html(found: dict[str, Any] | None) -> list[str]:
    """The generated findings (bench.report.findings): differences an exact McNemar test supports."""
    if not found or not (found["tests"] or found["skipped"]):
        return []
    tests, n = found["tests"], len(found["tests"])
    out = ["<h3>Findings</h3>",
           f"<p class=\"note\">{_e(found['scope'])}: {n} tests. A difference is listed only when the two-sided "
           f"exact McNemar test on the same examples gives p &lt; {found['alpha']}; Holm's correction over all {n} "
           "tests is given beside it. Every other pair is not distinguishable at this n.</p>"]
    for title, keep in (("Differences the test supports", True), ("Not distinguishable", False)):
        items = [t for t in tests if t["difference"] == keep]
        if items:
            out += [f"<h4>{title}</h4><ul>", *(f"<li>{_e(finding_text(t, n))}</li>" for t in items), "</ul>"]
    if found["skipped"]:
        out.append(f"<p class=\"note\">Skipped: {_e('; '.join(found['skipped']))}.</p>")
    return out


def _section_html(g: dict[str, Any], hidden: bool) -> str:
    """One threat model's section: its headline, then its tables (the minimal-norm attacks and the
    per-model metrics are sections of their own)."""
    main = " (main threat model: the budget most cells share)" if g["main"] else ""
    out = [f"<section class=\"threat-model\" id=\"tm-{_e(g['id'])}\" data-label=\"{_e(g['label'])}\""
           f"{' hidden' if hidden else ''}>", f"<h3>{_e(g['label'])}{main}</h3>"]
    if g["headline"] is not None:
        out += [f"<h4>Headline: worst case under {_e(g['label'])}</h4>", _table_html(g["headline"])]
    for t in g["tables"]:
        if t["title"] and (g["headline"] is not None or len(g["tables"]) > 1):
            out.append(f"<h4>{_e(t['title'])}</h4>")
        out.append(_table_html(t))
    return "\n".join([*out, "</section>"])


def _positions_html(tables: list[dict[str, Any]]) -> list[str]:
    """Accuracy at stream position p (bench.report.position_tables), as the Markdown board lists it."""
    if not tables:
        return []
    out = ["<h2>Accuracy at stream position p</h2>", f"<p class=\"note\">{_e(POSITIONS_EXPLAIN)}</p>"]
    for t in tables:
        out.append(f"<h3>{_e(t['title'])}</h3>")
        if t["rows"]:
            out.append(_table_html(t))
        if t["notes"]:
            out += ["<ul class=\"note\">", *(f"<li>{_e(n)}</li>" for n in t["notes"]), "</ul>"]
    return out


def _indicators_html(found: dict[str, Any] | None) -> list[str]:
    """The indicators of attack failure (Pintor et al., NeurIPS 2022) per row, then per cell with the
    remedy each names (bench.report.indicators)."""
    if not found:
        return []
    out = ["<h3>Indicators of attack failure</h3>",
           f"<p class=\"note\">Indicators of attack failure (Pintor et al., NeurIPS 2022) fired on "
           f"{found['fired_cells']} of {found['measured']} measured cells; per row, the count over its cells, then "
           "each cell's indicators with the remedy they name.</p>", "<ul>"]
    for row in found["rows"]:
        cells = "".join(f"<li><code>{_e(c['cell'])}</code>: "
                        + _e("; ".join(f"{i['name']} ({i['value']}): {i['remedy']}" for i in c["indicators"]))
                        + "</li>" for c in row["cells"])
        out.append(f"<li>{_e(row['train'])} + {_e(row['runtime'])}: {row['fired']} fired<ul>{cells}</ul></li>")
    return [*out, "</ul>"]


def _flags_html(model: dict[str, Any]) -> list[str]:
    """What the Markdown board lists under "Flags and findings": rows whose clean accuracy dropped,
    reliability flags, code versions, indicators of attack failure, the generated findings."""
    out: list[str] = []
    if model["clean_drops"]:
        dropped = ", ".join(f"{row} ({100 * d:.1f} points lower)" for row, d in model["clean_drops"].items())
        out.append(f"<p><span class=\"drop\">{DROP.strip()}</span> Clean accuracy more than "
                   f"{100 * CLEAN_DROP:.0f} points below the undefended model ({_e(model['baseline'])}): "
                   f"{_e(dropped)}. Such a row is never ranked above the undefended one: a defense that "
                   "misclassifies clean inputs can look robust.</p>")
    if model["flags"]:
        out += [f"<p><span class=\"flag\">{FLAG.strip()}</span> The evaluation looks unreliable "
                "(AutoAttack-style checks); the number may overstate robustness:</p><ul>",
                *(f"<li><code>{_e(f['key'])}</code>: {_e('; '.join(f['why']))}</li>" for f in model["flags"]),
                "</ul>"]
    if model["versions_note"]:
        out += ["<p>Code versions: the cells of this board come from more than one version of the code (cells of "
                "a finished grid are kept when the code changes; rerun a cell to refresh it):</p><ul>",
                *(f"<li>{inline(line)}</li>" for line in model["versions_note"]), "</ul>"]
    out += _indicators_html(model.get("indicators"))
    out += _findings_html(model.get("findings"))
    return ["<h2>Flags and findings</h2>", *out] if out else []


def render_board(model: dict[str, Any], figures: list[tuple[str, str]]) -> str:
    """One board's page (a complete HTML document)."""
    name = model["name"]
    body = [f"<p class=\"meta\"><a href=\"{INDEX}\">All leaderboards</a></p>",
            f"<h1>Leaderboard: {_e(name)}{_wiring(model)}</h1>"]
    if model["description"]:
        body.append(f"<p>{inline(model['description'])}</p>")
    if model.get("wiring_check"):
        body.append("<p class=\"note\">A wiring check: it shows the pipeline runs end to end, its numbers are "
                    "not a measurement of the defenses.</p>")
    versions = model["code_versions"]
    body.append(f"<p class=\"meta\">Dataset <code>{_e(model['dataset'])}</code>, architecture "
                f"<code>{_e(model['arch'])}</code>; n = {model['n']} test examples; "
                f"seed {_e(', '.join(model['seeds']))}; "
                f"{model['cells']} cells; code version {_e(', '.join(versions))}; device "
                f"{_e(', '.join(model['devices']))}; last cell finished {_e(model['date'])}.</p>")
    if len(versions) > 1:
        body.append(f"<p class=\"note\">The records come from {len(versions)} code versions "
                    f"({_e(', '.join(versions))}): cells run at different times were not rerun together.</p>")
    if model["groups"]:
        options = "".join(f"<option value=\"{_e(g['id'])}\"{' selected' if g['id'] == model['default_group'] else ''}>"
                          f"{_e(g['label'])}</option>" for g in model["groups"])
        body += ["<h2>Results by threat model</h2>",
                 "<p class=\"note\">Per threat model (norm, eps), the headline ranks rows by the worst case: the "
                 "share of examples that survive every attack with that budget in the row, white-box, adaptive and "
                 "transfer alike; <code>attacks</code>: how many attacks that is. A row is called better than the "
                 "next only when an exact McNemar test on the same examples gives p &lt; 0.05. Then the robust "
                 "accuracy of each attack, in %, with its 95% Wilson interval in brackets (rounded outward). "
                 "Click a column header to sort.</p>"]
        if model["reference_source"]:
            body.append(f"<p class=\"note\">Numbers in parentheses are the seed paper's "
                        f"({_e(model['reference_source'])}), shown beside ours, not in place of ours; "
                        f"{OUTSIDE} marks one outside our 95% interval.</p>")
        body.append(f"<div class=\"controls\"><label for=\"threat-model\">Threat model: </label>"
                    f"<select id=\"threat-model\">{options}</select></div>")
        body += [_section_html(g, g["id"] != model["default_group"]) for g in model["groups"]]
        if model["footer"]:
            body.append(f"<p class=\"note\">{inline(model['footer'])}</p>")
    else:
        body.append("<p>(no finished cells)</p>")
    body += _positions_html(model.get("positions") or [])
    body += _flags_html(model)
    if figures:
        body.append("<h2>Figures</h2>")
        body += [f"<figure><img alt=\"{_e(title)}\" src=\"data:image/png;base64,{b64}\">"
                 f"<figcaption>{_e(title)}</figcaption></figure>" for title, b64 in figures]
    if model["failed"]:
        body += [f"<h2>Failed cells</h2><p>{len(model['failed'])} cell(s) failed and are not shown:</p><ul>",
                 *(f"<li><code>{_e(f['key'])}</code>: {_e(f['error'][:300])}</li>" for f in model["failed"]),
                 "</ul>"]
    if model["notes"].strip():
        body.append(f"<div class=\"notes\">{markdown_html(model['notes'])}</div>")
    mixed = " (with the current code: this board mixes code versions, see above)" if len(versions) > 1 else ""
    body.append(f"<footer><p>Reproduce: <code>{_e(model['reproduce'])}</code>{mixed}"
                + (f"; records from <code>{_e(model['source'])}</code>" if model["source"] else "")
                + ".</p></footer>")
    return _page(f"Leaderboard: {name}", "\n".join(body))


def render_index(models: list[dict[str, Any]]) -> str:
    """The site's index: one row per board, linked."""
    cols = ["leaderboard", "dataset", "main threat model", "top row (worst case)", "n", "cells", "date",
            "code version", "device"]
    head = "".join(f"<th class=\"sortable{' text' if i not in (4, 5) else ''}\" "
                   f"data-type=\"{'num' if i in (4, 5) else 'text'}\" tabindex=\"0\" scope=\"col\">{_e(c)}</th>"
                   for i, c in enumerate(cols))
    rows = []
    for m in models:
        top = f"{m['top']['row']}: {m['top']['worst']}" if m["top"] else "-"
        rows.append(
            f"<tr><td class=\"text wrap\"><a href=\"{_e(page_name(m['name']))}\">{_e(m['name'])}</a>{_wiring(m)}"
            f"<br><span class=\"note\">{_e(m['description'])}</span></td>"
            f"<td class=\"text\">{_e(m['dataset'])}</td><td class=\"text\">{_e(m['main_budget'] or '-')}</td>"
            f"<td class=\"text\">{_e(top)}</td><td data-v=\"{m['n']}\">{m['n']}</td>"
            f"<td data-v=\"{m['cells']}\">{m['cells']}</td><td class=\"text\">{_e(m['date'])}</td>"
            f"<td class=\"text\">{_e(', '.join(m['code_versions']))}</td>"
            f"<td class=\"text\">{_e(', '.join(m['devices']))}</td></tr>")
    body = ("<h1>Adversarial-robustness leaderboards</h1>\n"
            "<p class=\"note\">One page per grid: the headline ranks rows by the worst case under the grid's main "
            "threat model; each page has a table per threat model, intervals, the seed papers' numbers beside "
            "ours and the figures. Built by <code>bench site</code>.</p>\n"
            f"<div class=\"scroll\"><table id=\"boards\" class=\"board\">\n<thead><tr>{head}</tr></thead>\n<tbody>\n"
            + "\n".join(rows) + "\n</tbody>\n</table></div>")
    return _page("Adversarial-robustness leaderboards", body)


def _finite(obj: Any) -> Any:
    """JSON has no infinity (an unbounded minimal-norm median): written as the string "inf"."""
    if isinstance(obj, float) and obj != obj or obj in (float("inf"), float("-inf")):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def page_name(grid: str) -> str:
    return f"{_slug(grid)}.html"


def write_site(boards: list[BoardInput], out: Path, figures: bool = True) -> list[Path]:
    """Write ``<out>/<grid>.html`` per board, ``<out>/index.html`` and ``<out>/boards.json`` (the data
    model, for scripts); the written paths, index first. ``figures=False`` leaves the pictures out
    (drawing them is most of the time)."""
    from bench.core.cache import atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    models, written = [], []
    for board in boards:
        model = board_model(board)
        path = out / page_name(board.spec.name)
        atomic_write_text(path, render_board(model, board_figures(board, model) if figures else []))
        models.append(model)
        written.append(path)
    index = out / INDEX
    atomic_write_text(index, render_index(models))
    atomic_write_text(out / "boards.json", json.dumps(_finite(models), indent=1, default=str) + "\n")
    return [index, *written]
