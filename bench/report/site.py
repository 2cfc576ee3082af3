"""A static leaderboard site: one self-contained HTML page per board plus an index, in the manner of
RobustBench's (Croce et al., NeurIPS 2021 Datasets and Benchmarks) and MultiRobustBench's (Dai et
al., ICML 2023) leaderboard sites: sortable columns, a threat-model selector, the seed paper's
numbers beside ours, 95% intervals, and the figures inline.

Every number comes from the functions that build the Markdown board (``build_table``, ``headline``,
``footer``, ``write_figures`` in bench.report), so a page and ``leaderboards/<grid>.md`` never
disagree. Pages carry their CSS, script and pictures (base64 PNG) inline and reference nothing
outside themselves: they open from a file or any static host with no network access.

``board_model`` (plain dicts and lists, no pandas) is the data model of one page; ``write_site`` turns
a list of them into files.
"""

from __future__ import annotations

import base64
import html
import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.report.board import device_labels
from bench.report.findings import finding_text, findings
from bench.report.flags import cell_flags
from bench.report.leaderboard import FLAG, OUTSIDE, build_table, footer, headline, main_budget, worst_label
from bench.report.rows import budgets_in
from bench.spec.grid import GridSpec
from bench.spec.labels import Budget, budget_label, budget_of, column_label

INDEX = "index.html"
RECORDS = "records.jsonl"
TEXT_COLUMNS = ("train-time", "runtime", "vs next row (McNemar)")
MINIMAL = "minimal-norm"
METRICS = "model metrics"

# "45.0 [40–50] (47‡) †": ours, its interval, the paper's number (‡ outside our interval), a flag.
_CELL = re.compile(r"^(?P<v>-?\d+(?:\.\d+)?(?:e[+-]?\d+)?|∞)(?: \[(?P<lo>\d+)–(?P<hi>\d+)\])?"
                   rf"(?: \((?P<ref>[^)]*?)(?P<out>{OUTSIDE})?\))?(?P<flag>{FLAG})?$")


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


def parse_cell(text: str) -> dict[str, Any]:
    """A formatted table cell split into its parts: ``text`` as printed, ``value`` (a float to sort by,
    None for '-' or text), ``lo``/``hi`` (the interval), ``ref`` (the paper's number), ``outside``
    (the paper's number lies outside our interval) and ``flag`` (a reliability flag)."""
    text = str(text)
    cell: dict[str, Any] = {"text": text, "value": None}
    m = _CELL.match(text.strip())
    if m is None:  # a form this parser does not know (a new marker): shown as printed, sorted by its number
        if lead := re.match(r"^-?\d+(?:\.\d+)?", text.strip()):
            cell["value"], cell["shown"] = float(lead.group(0)), text.strip()
        return cell
    v = m.group("v")
    cell["value"] = float("inf") if v == "∞" else float(v)
    cell["shown"] = v
    if m.group("lo") is not None:
        cell["lo"], cell["hi"] = int(m.group("lo")), int(m.group("hi"))
    if m.group("ref") is not None:
        cell["ref"] = m.group("ref")
        cell["outside"] = bool(m.group("out"))
    cell["flag"] = bool(m.group("flag"))
    return cell


def _table(df: Any, fill_train: bool = True) -> dict[str, Any]:
    """A DataFrame of formatted cells as {columns, rows}: each row a list of parsed cells. The Markdown
    board blanks a repeated train-time defense; a sortable table needs it in every row."""
    columns = [str(c) for c in df.columns]
    rows, last = [], ""
    for values in df.itertuples(index=False):
        row = []
        for col, v in zip(columns, values):
            text = str(v)
            if col == "train-time" and fill_train:
                text, last = (text or last), (text or last)
            row.append({"text": text, "value": None} if col in TEXT_COLUMNS else parse_cell(text))
        rows.append(row)
    return {"columns": columns, "rows": rows}


def _split(df: Any, ok: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The all-cells table split into one table per threat model (its attacks and its worst case), one
    for the minimal-norm attacks (robust accuracy, median norm, rho_2, threshold columns) and one for
    per-model metrics: the pieces the threat-model selector switches between."""
    key_cols = [c for c in ("train-time", "runtime", "clean") if c in df.columns]
    by_budget: dict[str, Budget | None] = {column_label(r): budget_of(r) for r in ok if budget_of(r) is not None}
    for label in {column_label(r) for r in ok if budget_of(r) is None}:
        for c in map(str, df.columns):  # the attack's own column, then its med / rho_2 / threshold columns
            if c == label or c == f"{label} ρ2" or c.startswith(f"{label} med ") or \
                    (c.startswith(f"{label} ") and " ≤ " in c):
                by_budget[c] = None
    groups = []
    used = set(key_cols)
    for b in budgets_in(ok):
        cols = [c for c in df.columns if c not in used and by_budget.get(c, ()) == b]
        cols += [worst_label(b)] if worst_label(b) in df.columns else []
        used.update(cols)
        groups.append({"id": _slug(budget_label(b)), "label": budget_label(b), "budget": list(b), "columns": cols})
    minimal = [c for c in df.columns if c not in used and c in by_budget and by_budget[c] is None]
    used.update(minimal)
    if minimal:
        groups.append({"id": "minimal-norm", "label": MINIMAL + " attacks", "budget": None, "columns": minimal})
    rest = [c for c in df.columns if c not in used]
    if rest:
        groups.append({"id": "metrics", "label": METRICS, "budget": None, "columns": rest})
    for g in groups:
        g["table"] = _table(df[[*key_cols, *g.pop("columns")]])
        if g["budget"] is not None:  # the section names the budget: headers drop it (narrower tables)
            suffix = f" {g['label']}"
            g["table"]["headers"] = [c.removesuffix(suffix) for c in g["table"]["columns"]]
    return groups


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def board_model(board: BoardInput) -> dict[str, Any]:
    """One page's content as plain data: meta, the headline, one table per threat model, flags, failed
    cells and notes. Tables are bench.report.leaderboard's (same cells, same formatting)."""
    from bench.report.board import pool_flags, pool_seeds, seeds_of

    spec, records = board.spec, board.records
    seeds = [str(s) for s in seeds_of(records)]
    flags = cell_flags(records)
    if len(seeds) > 1:  # a multi-seed grid: one pooled record per cell (bench.report.board.pool_seeds)
        records, flags = pool_seeds(records), pool_flags(records, flags)
    ok = [r for r in records if r.get("status") == "ok"]
    head, budget = headline(records, spec)
    groups = _split(build_table(records, spec, flags), ok) if ok else []
    main = budget_label(budget) if budget is not None else None
    default_group = next((g["id"] for g in groups if g["label"] == main), groups[0]["id"] if groups else None)
    by_id = {r.get("cell_id"): r for r in ok}
    versions = sorted({str(r.get("code_version") or "-") for r in ok})
    top = None
    if budget is not None and len(head):
        first = head.iloc[0]
        top = {"row": f"{first['train-time']}/{first['runtime']}", "worst": str(first[worst_label(budget)])}
    return {
        "name": spec.name,
        "description": spec.description,
        "dataset": spec.dataset,
        "arch": spec.arch,
        "wiring_check": bool(getattr(spec, "wiring_check", False)),
        "n": max((int(r["n"]) for r in ok), default=0),
        "seeds": seeds,
        "code_versions": versions,
        "devices": device_labels(ok) or ["-"],
        "date": max((str(r.get("finished_at", "")) for r in ok), default="")[:10] or "-",
        "cells": len(ok),
        "main_budget": main,
        "headline": _table(head, fill_train=False) if len(head) else None,
        "headline_footer": footer([r for r in ok if budget_of(r) == budget], spec) if budget is not None else "",
        "top": top,
        "groups": groups,
        "default_group": default_group,
        "footer": footer(ok, spec) if ok else "",
        "reference_source": spec.reference_source if spec.reference else "",
        "flags": [{"key": by_id[c]["key"], "why": why} for c, why in flags.items() if c in by_id],
        "failed": [{"key": r.get("key", r.get("cell_id")), "error": str(r.get("error", ""))}
                   for r in records if r.get("status") != "ok"],
        "notes": board.notes or "",
        "source": board.source,
        "reproduce": _reproduce(records, spec),
        "findings": findings(records, spec),
    }


def _reproduce(records: list[dict[str, Any]], spec: GridSpec) -> str:
    """The Markdown board's own "Reproduce:" line (bench.report.leaderboard.render), so the two agree."""
    from bench.report.leaderboard import render

    line = next((ln for ln in render(records, spec).splitlines() if ln.startswith("Reproduce:")), "")
    return line.removeprefix("Reproduce:").strip()


def board_figures(board: BoardInput, model: dict[str, Any]) -> list[tuple[str, str]]:
    """(title, base64 PNG) of the board's pictures: drawn afresh from the records by
    bench.report.plots, then any other PNG in ``board.figures_dir`` (the grid's own figures)."""
    from bench.report.board import pool_seeds
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
.flag { color: var(--warn); }
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


def _cell_html(cell: dict[str, Any], text_col: bool) -> str:
    if text_col or cell.get("value") is None:
        cls = ' class="text"' if text_col else ""
        return f"<td{cls}>{_e(cell['text'])}</td>"
    v = cell["value"]
    parts = [f"<span class=\"v\">{_e(cell['shown'])}</span>"]
    if "lo" in cell:
        parts.append(f" <span class=\"ci\" title=\"95% Wilson interval\">[{cell['lo']}–{cell['hi']}]</span>")
    if "ref" in cell:
        out = " outside" if cell.get("outside") else ""
        why = "paper's number, outside our 95% interval" if out else "paper's number"
        parts.append(f" <span class=\"paper{out}\" title=\"{why}\">({_e(cell['ref'])}"
                     f"{OUTSIDE if out else ''})</span>")
    if cell.get("flag"):
        parts.append(f"<span class=\"flag\" title=\"reliability flag: see below\">{FLAG}</span>")
    data_v = "1e308" if v == float("inf") else repr(v)
    return f"<td data-v=\"{data_v}\">{''.join(parts)}</td>"


def _table_html(table: dict[str, Any], table_id: str) -> str:
    cols = table["columns"]
    text = [c in TEXT_COLUMNS for c in cols]
    head = "".join(f"<th class=\"sortable{' text' if t else ''}\" data-type=\"{'text' if t else 'num'}\" "
                   f"data-col=\"{_e(c)}\" title=\"{_e(c)}\" tabindex=\"0\" scope=\"col\">{_e(h)}</th>"
                   for c, h, t in zip(cols, table.get("headers", cols), text))
    body = "\n".join("<tr>" + "".join(_cell_html(cell, t) for cell, t in zip(row, text)) + "</tr>"
                     for row in table["rows"])
    return (f"<div class=\"scroll\"><table id=\"{_e(table_id)}\" class=\"board\">\n<thead><tr>{head}</tr></thead>\n"
            f"<tbody>\n{body}\n</tbody>\n</table></div>")


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
    out = ["<h2>Findings</h2>",
           f"<p class=\"note\">{_e(found['scope'])}: {n} tests. A difference is listed only when the two-sided "
           f"exact McNemar test on the same examples gives p &lt; {found['alpha']}; Holm's correction over all {n} "
           "tests is given beside it. Every other pair is not distinguishable at this n.</p>"]
    for title, keep in (("Differences the test supports", True), ("Not distinguishable", False)):
        items = [t for t in tests if t["difference"] == keep]
        if items:
            out += [f"<h3>{title}</h3><ul>", *(f"<li>{_e(finding_text(t, n))}</li>" for t in items), "</ul>"]
    if found["skipped"]:
        out.append(f"<p class=\"note\">Skipped: {_e('; '.join(found['skipped']))}.</p>")
    return out


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
    if model["headline"] is not None:
        body += [f"<h2>Headline: worst case under {_e(model['main_budget'])}</h2>",
                 "<p class=\"note\">Rows ranked by the share of examples that survive every attack of the grid's "
                 "main threat model, white-box, adaptive and transfer alike; a row is called better than the "
                 "next only when an exact McNemar test on the same examples gives p &lt; 0.05. Click a column "
                 "header to sort.</p>",
                 _table_html(model["headline"], "headline"),
                 f"<p class=\"note\">{inline(model['headline_footer'])}</p>"]
    if model["groups"]:
        options = "".join(f"<option value=\"{_e(g['id'])}\"{' selected' if g['id'] == model['default_group'] else ''}>"
                          f"{_e(g['label'])}</option>" for g in model["groups"])
        body += ["<h2>Results by threat model</h2>",
                 "<p class=\"note\">Accuracy in %, 95% Wilson interval in brackets (rounded outward); "
                 "worst: the share of examples that survive every attack of that budget in the row.</p>"]
        if model["reference_source"]:
            body.append(f"<p class=\"note\">Numbers in parentheses are the seed paper's "
                        f"({_e(model['reference_source'])}), shown beside ours, not in place of ours; "
                        f"{OUTSIDE} marks one outside our 95% interval.</p>")
        body.append(f"<div class=\"controls\"><label for=\"threat-model\">Threat model: </label>"
                    f"<select id=\"threat-model\">{options}</select></div>")
        for g in model["groups"]:
            hidden = "" if g["id"] == model["default_group"] else " hidden"
            body.append(f"<section class=\"threat-model\" id=\"tm-{_e(g['id'])}\" data-label=\"{_e(g['label'])}\""
                        f"{hidden}>\n<h3>{_e(g['label'])}</h3>\n{_table_html(g['table'], 'table-' + g['id'])}\n"
                        "</section>")
        body.append(f"<p class=\"note\">{inline(model['footer'])}</p>")
    else:
        body.append("<p>(no finished cells)</p>")
    if model["flags"]:
        body += ["<h2>Reliability flags</h2>",
                 f"<p class=\"note\"><span class=\"flag\">{FLAG.strip()}</span> The evaluation looks "
                 "unreliable (AutoAttack-style checks); the number may overstate robustness.</p><ul>",
                 *(f"<li><code>{_e(f['key'])}</code>: {_e('; '.join(f['why']))}</li>" for f in model["flags"]),
                 "</ul>"]
    body += _findings_html(model.get("findings"))
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
    body.append(f"<footer><p>Reproduce: {inline(model['reproduce'].rstrip('.'))}"
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
