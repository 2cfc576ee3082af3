"""The static leaderboard site (issue 32): `bench site` writes self-contained pages whose numbers are
the records', and, in a real headless Chromium, the page loads without console errors, a click on a
column header reorders the rows and the threat-model selector switches tables."""

from __future__ import annotations

import dataclasses
import html
import json
import math
import os
import random
import re
import shutil
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.cli import cli
from bench.core.errors import BenchError
from bench.core.stats import interval_of
from bench.report.board import VS_NEXT, acc_cell, board, fmt_cell
from bench.report.leaderboard import render
from bench.report.rows import row_worst, table_rows
from bench.report.site import BoardInput, board_model, render_board, site_cell
from bench.spec import grid
from bench.track.results import load_records

REPO = Path(__file__).resolve().parents[1]
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def ci_records(seed: int = 0, name: str = "ci") -> list[dict]:
    """Seeded records for every cell of a grid (the ci grid: digits; Linf 0.1 and 0.2, a minimal-norm
    attack, a transfer attack): robust rates differ by row and attack, so sorting a column reorders rows."""
    rng = random.Random(seed)
    spec = grid.load(name)
    clean = {}
    out = []
    for c in spec.cells():
        n = 40
        row = (c.train_defense, c.runtime_defense)
        clean.setdefault(row, rng.randint(30, 39))
        rate = rng.random()
        per_example = "".join("1" if rng.random() < rate else "0" for _ in range(n))
        rec = {"cell_id": c.cell_id, "key": c.key, "status": "ok", "train_defense": c.train_defense,
               "runtime_defense": c.runtime_defense, "attack": c.attack_label, "attack_name": c.attack,
               "threat": c.threat, "eps": c.eps, "norm": "L2" if c.eps is None else "Linf", "n": n, "seed": 0,
               "clean_acc": clean[row] / n, "robust_acc": per_example.count("1") / n, "per_example": per_example,
               "code_version": "0.1.0+test", "device": "cpu", "finished_at": "2026-12-01T10:00:00Z"}
        if c.eps is None:
            rec["median_norm"] = round(rng.uniform(0.5, 2.0), 3)
            rec["mean_rho2_success"] = round(rng.uniform(0.05, 0.3), 3)
        out.append(rec)
    return out


def write_results(folder: Path, records: list[dict], name: str = "ci") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


class Checker(HTMLParser):
    """Well-formedness of a standalone page: doctype first, every non-void element closed in order,
    one html/head/title/body, and no resource that would be fetched from elsewhere."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.seen: dict[str, int] = {}
        self.doctype = False
        self.problems: list[str] = []
        self.links: list[str] = []
        self.cells: list[tuple[str | None, str]] = []

    def handle_decl(self, decl: str) -> None:
        self.doctype = self.doctype or (decl.lower() == "doctype html" and not self.seen)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.seen[tag] = self.seen.get(tag, 0) + 1
        a = dict(attrs)
        if tag == "a" and a.get("href"):
            self.links.append(a["href"] or "")
        for attr in ("src", "href", "action", "poster"):
            v = a.get(attr)
            if v is not None and tag != "a" and not v.startswith("data:"):
                self.problems.append(f"<{tag} {attr}={v[:40]}> loads a resource")
        if tag == "link" or (tag == "script" and "src" in a):
            self.problems.append(f"external <{tag}>")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            self.problems.append(f"</{tag}> closes a void element")
        elif not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> does not close <{self.stack[-1] if self.stack else None}>")
        else:
            self.stack.pop()


def check_page(text: str) -> Checker:
    c = Checker()
    c.feed(text)
    c.close()
    assert c.doctype, "no <!DOCTYPE html> first"
    assert not c.problems, c.problems
    assert not c.stack, f"unclosed: {c.stack}"
    for tag in ("html", "head", "title", "body"):
        assert c.seen.get(tag) == 1, f"<{tag}> x {c.seen.get(tag)}"
    assert not re.search(r"https?://", text, re.I), "a page refers to the network"
    return c


class Tables(HTMLParser):
    """Every <table id=...> as {columns, rows}: rows of (text, data-v) per cell."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: dict[str, dict] = {}
        self.current: dict | None = None
        self.cell: list | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self.current = self.tables.setdefault(a.get("id") or "", {"columns": [], "rows": []})
        elif tag == "tr" and self.current is not None:
            self.current["rows"].append([])
        elif tag in ("td", "th") and self.current is not None:
            self.cell = [tag, "", a.get("data-v") if tag == "td" else a.get("data-col")]

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell[1] += data

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self.cell is not None and self.current is not None:
            kind, text, value = self.cell
            if kind == "th":  # the full column name (the header shown may leave out the table's budget)
                self.current["columns"].append(value or text)
                self.current.setdefault("shown", []).append(text)
            else:
                self.current["rows"][-1].append((text.strip(), value))
            self.cell = None
        elif tag == "table":
            if self.current is not None:
                self.current["rows"] = [r for r in self.current["rows"] if r]
            self.current = None


def tables_of(text: str) -> dict[str, dict]:
    t = Tables()
    t.feed(text)
    return t.tables


def test_site_pages_are_standalone_and_the_index_links_every_board(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_results(tmp_path / "results", ci_records())
    # A second board from the published layout: leaderboards/<grid>/records.jsonl, with its notes.
    write_results(tmp_path / "leaderboards" / "default", ci_records(1, "default"), "records")
    (tmp_path / "leaderboards" / "default.notes.md").write_text("## Notes\n\n- **made** with `bench run`\n")
    result = CliRunner().invoke(cli, ["site", "--grid", "ci", "--out", "out", "--no-figures"])
    assert result.exit_code == 0, result.output
    pages = sorted(p.name for p in (tmp_path / "out").glob("*.html"))
    assert pages == ["ci.html", "index.html"]
    for name in pages:
        check_page((tmp_path / "out" / name).read_text())
    index = check_page((tmp_path / "out" / "index.html").read_text())
    assert sorted(index.links) == ["ci.html"]

    # --all: every built-in grid with records, wherever they are.
    result = CliRunner().invoke(cli, ["site", "--all", "--out", "all", "--no-figures"])
    assert result.exit_code == 0, result.output
    index = check_page((tmp_path / "all" / "index.html").read_text())
    boards = sorted(p.name for p in (tmp_path / "all").glob("*.html") if p.name != "index.html")
    assert boards == ["ci.html", "default.html"] and sorted(index.links) == boards
    text = (tmp_path / "all" / "default.html").read_text()
    assert check_page(text).seen.get("strong") == 1  # the notes, rendered
    assert "records from <code>leaderboards/default/records.jsonl</code>" in text
    assert len(tables_of(text)["headline-linf-0-1"]["rows"]) == len(grid.load("default").pairs())


def test_site_numbers_match_the_records(tmp_path):
    records = ci_records()
    spec = grid.load("ci")
    text = render_board(board_model(BoardInput(spec, records)), [])
    tables = tables_of(text)
    # The main threat model's headline: worst case under Linf 0.1 per row, recomputed here from the
    # per-example outcomes.
    head = tables["headline-linf-0-1"]
    assert head["columns"] == ["rank", "train-time", "runtime", "clean", "worst Linf 0.1", "attacks", VS_NEXT]
    assert head["shown"][4] == "worst"  # the section names the budget
    expected = {}
    for (train, runtime), recs in table_rows(records, spec).items():
        joint = row_worst(recs, ("Linf", 0.1))
        expected[(train, runtime)] = (joint.count("1") / len(joint), interval_of(joint), recs[0]["clean_acc"])
    assert len(head["rows"]) == len(expected) == 4
    shown = []
    for row in head["rows"]:
        worst, ci, clean = expected[(row[1][0], row[2][0])]
        assert float(row[4][1]) == pytest.approx(worst)
        assert row[4][0] == f"{100 * worst:.1f} [{math.floor(100 * ci[0])}–{math.ceil(100 * ci[1])}]"
        assert float(row[3][1]) == pytest.approx(clean)
        shown.append(worst)
    assert shown == sorted(shown, reverse=True)  # ranked
    # One section per threat model with only its own budget's columns, and one for minimal-norm.
    assert {"table-linf-0-1-1", "table-linf-0-2-1", "table-minimal-norm-1", "headline-linf-0-2"} <= set(tables)
    assert tables["table-linf-0-2-1"]["columns"] == ["train-time", "runtime", "clean", "pgd", "worst Linf 0.2"]
    assert tables["table-linf-0-2-1"]["shown"] == ["train-time", "runtime", "clean", "pgd", "worst"]
    assert tables["table-minimal-norm-1"]["columns"] == ["train-time", "runtime", "deepfool", "deepfool med L2",
                                                         "deepfool ρ2"]
    # Every attack cell is the record's robust accuracy (data-v sorts by it); train-time in every row.
    by_key = {(r["train_defense"], r["runtime_defense"], r["attack"], r["threat"], r["eps"]): r for r in records}
    checked = 0
    for tid, eps in (("table-linf-0-1-1", 0.1), ("table-linf-0-2-1", 0.2), ("table-minimal-norm-1", None)):
        t = tables[tid]
        for row in t["rows"]:
            assert row[0][0] and row[1][0]
            for col, (_, value) in zip(t["columns"], row):
                threat = "transfer" if col.endswith(" (transfer)") else "base"
                r = by_key.get((row[0][0], row[1][0], col.removesuffix(" (transfer)"), threat, eps))
                if r is not None:
                    assert float(value) == pytest.approx(r["robust_acc"])
                    checked += 1
                elif col == "deepfool med L2":
                    assert float(value) == pytest.approx(by_key[(row[0][0], row[1][0], "deepfool", "base", None)]
                                                         ["median_norm"])
    assert checked == len(records)


def _markdown_tables(text: str) -> dict[str, list[list[str]]]:
    """The Markdown board's pipe tables under each '##' or '###' heading: rows of cell texts, header
    first (the ':---' separator row is left out)."""
    out: dict[str, list[list[str]]] = {}
    title = None
    for line in text.splitlines():
        if line.startswith(("## ", "### ")):
            title = line.split(" ", 1)[1]
        elif line.startswith("| ") and title is not None:
            out.setdefault(title, []).append([c.strip() for c in line.strip("|").split(" | ")])
    return out


def test_published_board_and_its_page_show_the_same_cells():
    """The published default board: every cell of every threat model's headline and tables on the
    page reads as in the Markdown board (leaderboards/default.md is rendered from the same records),
    and the indicators of attack failure listed under the Markdown's flags appear on the page."""
    spec = grid.load("default")
    records = load_records(REPO / "leaderboards" / "default" / "records.jsonl")
    markdown = render(records, spec)
    md = _markdown_tables(markdown)
    data = board(records, spec)
    page = render_board(board_model(data), [])
    check_page(page)
    tables = tables_of(page)
    pairs = []  # (the Markdown table's heading, the page table's id)
    for tm in data["threat_models"]:
        gid = tm["label"].lower().replace(" ", "-").replace(".", "-")
        main = " (main threat model: the budget most cells share)" if tm["main"] else ""
        pairs.append((f"{tm['label']}{main}", f"headline-{gid}"))
        pairs += [(t["title"], f"table-{gid}-{k + 1}") for k, t in enumerate(tm["tables"])]
    assert len(data["minimal_norm"]) == 1
    pairs.append(("Minimal-norm attacks", "table-minimal-norm-1"))
    compared = 0
    for title, tid in pairs:
        header, *rows = md[title]
        assert tables[tid]["columns"] == header
        last = ""
        for md_row, page_row in zip(rows, tables[tid]["rows"], strict=True):
            if not tid.startswith("headline-"):  # the Markdown prints a repeated train-time defense once
                md_row[0] = last = md_row[0] or last
            assert [text for text, _ in page_row] == [c.replace("\\|", "|") for c in md_row]
            compared += len(md_row)
    assert compared > 500
    # A known cell: standard/none under PGD at Linf 0.1, as the published board prints it.
    known = next(r for r in records if r["key"] == "standard/none/pgd/base/0.1")
    row = next(r for r in tables["table-linf-0-1-1"]["rows"] if (r[0][0], r[1][0]) == ("standard", "none"))
    cell = row[tables["table-linf-0-1-1"]["columns"].index("pgd")]
    assert cell[0] == fmt_cell(acc_cell(known["robust_acc"], tuple(known["robust_ci"])))
    assert f"| {cell[0]} |" in markdown and f"| {cell[0]} |" in (REPO / "leaderboards" / "default.md").read_text()
    fired = [ln[2:] for ln in markdown.splitlines() if ln.startswith("- ") and ln.endswith(" fired")]
    assert fired and all(f"{html.escape(ln)}<ul>" in page for ln in fired)
    assert "Indicators of attack failure (Pintor et al., NeurIPS 2022)" in page


def test_position_tables_appear_on_the_page():
    """A grid with [[positions]]: the page shows accuracy at stream position p as the Markdown board
    does (interval, paper's number, the clipped window and its note)."""
    from tests.test_stream_position import STREAM, _rec, _spec

    spec, records = _spec(), [_rec("pgd-skip", STREAM), _rec("skip-delayed-q2", "000001111000")]
    data = board(records, spec)
    page = render_board(board_model(data), [])
    check_page(page)
    assert "<h2>Accuracy at stream position p</h2>" in page
    (want,) = data["positions"]
    shown = tables_of(page)["positions-1"]
    assert shown["columns"] == want["columns"]
    (row,) = shown["rows"]
    assert [text for text, _ in row] == [fmt_cell(want["rows"][0][c]) for c in want["columns"]]
    at3 = dict(zip(shown["columns"], row))["pgd-skip (adaptive) @ p=3"]
    assert at3[0].startswith("50.0 [") and at3[0].endswith(" (25.3)") and float(at3[1]) == 0.5
    assert "✂" in dict(zip(shown["columns"], row))["skip-delayed-q2 (adaptive) @ p=8"][0]
    assert "clipped to positions 11-12 (2 of 4 points" in page
    assert "## Accuracy at stream position p" in render(records, spec)


def test_per_model_metrics_are_numbers_on_the_page():
    """Per-model metrics (Deep Defense's Table 2) read as in the Markdown board and sort by their value,
    not their text (0.0123 below 0.5)."""
    records = ci_records()
    values = {("standard", "none"): 0.5, ("standard", "deepnn"): 0.0123, ("adv-fgsm", "none"): 2.25}
    for r in records:
        if (r["train_defense"], r["runtime_defense"]) in values:
            r["deepfool_l2"] = values[(r["train_defense"], r["runtime_defense"])]
    base = grid.load("ci")
    spec = dataclasses.replace(base, reference={**base.reference, "standard/none/l2 (DeepFool)": 0.45})
    page = render_board(board_model(board(records, spec)), [])
    (table,) = [t for tid, t in tables_of(page).items() if tid == "table-metrics-1"]
    assert table["columns"] == ["train-time", "runtime", "l2 (DeepFool)"]
    shown = {(r[0][0], r[1][0]): r[2] for r in table["rows"]}
    assert shown == {("standard", "none"): ("0.5 (0.45)", "0.5"), ("standard", "deepnn"): ("0.0123", "0.0123"),
                     ("adv-fgsm", "none"): ("2.25", "2.25")}
    assert "| standard | none | 0.5 (0.45) |" in render(records, spec)


def test_paper_numbers_beside_ours_and_outside_marked():
    spec = grid.parse({"dataset": "digits", "arch": "small-cnn", "attacks": [{"name": "fgsm", "eps": 0.1}],
                       "reference": {"standard/none/fgsm": 50, "standard/none/clean": 99},
                       "reference_source": "Some et al. 2020"}, "g")
    per = "1" * 30 + "0" * 10
    rec = {"cell_id": "a", "key": "standard/none/fgsm/base/0.1", "status": "ok", "train_defense": "standard",
           "runtime_defense": "none", "attack": "fgsm", "attack_name": "fgsm", "threat": "base", "eps": 0.1,
           "norm": "Linf", "n": 40, "seed": 0, "clean_acc": 0.975, "robust_acc": 0.75, "per_example": per}
    text = render_board(board_model(BoardInput(spec, [rec])), [])
    check_page(text)
    # 75% of 40 has the interval [60-86]: the paper's 50 lies outside it, its 99 clean inside [87-100].
    assert '<span class="paper outside" title="paper\'s number, outside our 95% interval"> (50‡)</span>' in text
    assert '<span class="paper" title="paper\'s number"> (99)</span>' in text
    assert "Some et al. 2020" in text
    cell = site_cell(acc_cell(0.75, interval_of(per), 50, flag=True))
    lo, hi = math.floor(100 * interval_of(per)[0]), math.ceil(100 * interval_of(per)[1])
    assert cell["text"] == f"75.0 [{lo}–{hi}] (50‡) †" and cell["value"] == 0.75
    assert (cell["ref"], cell["outside"], cell["flag"]) == (50, True, True)
    assert (math.floor(cell["lo"]), math.ceil(cell["hi"])) == (lo, hi) and lo > 50


def test_site_without_records_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["site", "--grid", "ci"])
    assert isinstance(result.exception, BenchError)  # bench's main() prints it as one line, exit code 2
    msg = str(result.exception)
    assert "no records for grid ci" in msg and "bench run --grid ci" in msg and "\n" not in msg
    # Records of another --limit: said, not an empty board.
    write_results(tmp_path / "results", [{**r, "cell_id": "x" + r["cell_id"]} for r in ci_records()])
    result = CliRunner().invoke(cli, ["site", "--grid", "ci"])
    assert isinstance(result.exception, BenchError) and "pass the --limit and --seed" in str(result.exception)
    assert not (tmp_path / "site").exists()


# ---------------------------------------------------------------------------------------- the browser


def _browser():
    """Headless Chromium through selenium and the system's chromedriver, or a skip saying what is missing."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[test]')")
    browser = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip("chromium and chromedriver are not installed (Debian: apt-get install chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1300,1000"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=opts, service=Service(driver))


def _order(table) -> list[str]:
    return [r.find_elements("tag name", "td")[1].text + "/" + r.find_elements("tag name", "td")[0].text
            for r in table.find_elements("css selector", "tbody tr")]


@pytest.mark.slow
def test_site_in_headless_chromium(tmp_path):
    from selenium.webdriver.support.ui import Select

    driver = _browser()
    # CI hands over the ci grid's real records of the run just made; elsewhere, seeded ones.
    real = os.environ.get("BENCH_CI_LOCAL_RESULTS")
    results = tmp_path / "results"
    if real and Path(real).is_file():
        results.mkdir()
        shutil.copy(real, results / "ci.jsonl")
    else:
        write_results(results, ci_records())
    out = tmp_path / "site"
    try:
        result = CliRunner().invoke(cli, ["site", "--grid", "ci", "--results-dir", str(results), "--out", str(out)])
        assert result.exit_code == 0, result.output
        check_page((out / "ci.html").read_text())  # with its figures inline
        driver.get((out / "ci.html").as_uri())
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
        images = driver.find_elements("css selector", "figure img")
        assert len(images) == 2 and all(driver.execute_script("return arguments[0].naturalWidth", i) > 100
                                        for i in images)  # drawn from the inline PNGs

        # Sorting: a numeric column whose values are not already in order; the first click sorts it
        # best first (descending, '-' last), the second ascending.
        table = driver.find_element("id", "table-linf-0-1-1")
        headers = table.find_elements("css selector", "thead th")
        rows = table.find_elements("css selector", "tbody tr")
        before = _order(table)
        col = next(i for i, h in enumerate(headers) if h.get_attribute("data-type") == "num" and
                   (v := [float(r.find_elements("tag name", "td")[i].get_attribute("data-v")) for r in rows])
                   != sorted(v, reverse=True))
        values = {o: float(r.find_elements("tag name", "td")[col].get_attribute("data-v"))
                  for o, r in zip(before, rows)}
        headers[col].click()
        after = _order(table)
        assert after != before
        assert after == sorted(before, key=lambda o: -values[o])  # stable: ties keep their order
        assert headers[col].get_attribute("aria-sort") == "descending"
        headers[col].click()
        assert _order(table) == sorted(before, key=lambda o: values[o])

        # The threat-model selector shows one table at a time.
        select = Select(driver.find_element("id", "threat-model"))
        assert driver.find_element("id", "tm-linf-0-1").is_displayed()
        assert not driver.find_element("id", "tm-linf-0-2").is_displayed()
        select.select_by_visible_text("Linf 0.2")
        assert driver.find_element("id", "tm-linf-0-2").is_displayed()
        assert not driver.find_element("id", "tm-linf-0-1").is_displayed()
        assert driver.find_element("id", "table-linf-0-2-1").find_elements("css selector", "thead th")[-1] \
            .get_attribute("data-col") == "worst Linf 0.2"
        assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        driver.refresh()  # the board as a visitor first sees it, for the screenshot

        # A screenshot of the whole board, kept by CI as an artifact.
        artifacts = Path(os.environ.get("BENCH_ARTIFACTS_DIR") or tempfile.mkdtemp(prefix="bench-artifacts-"))
        artifacts.mkdir(parents=True, exist_ok=True)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1300, min(int(height) + 40, 8000))
        shot = artifacts / "site-ci.png"
        assert driver.save_screenshot(str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        shutil.copy(out / "ci.html", artifacts / "site-ci.html")
        print(f"screenshot of the leaderboard site: {shot}")
    finally:
        driver.quit()


def test_every_marker_of_a_cell_is_styled_and_an_unknown_one_still_renders(monkeypatch):
    """The clean-drop marker gets its own span; a marker the site does not know (a later one in
    fmt_cell) leaves the cell as fmt_cell prints it, sorted by its value."""
    from bench.report import site

    dropped = {**acc_cell(0.65, (0.55, 0.74), spread=[0.6, 0.7]), "drop": True}
    cell = site_cell(dropped)
    assert [cls for cls, _ in cell["parts"]] == ["v", "ci", "spread", "drop"]
    assert "".join(t for _, t in cell["parts"]) == cell["text"] == fmt_cell(dropped)
    real = site.fmt_cell
    monkeypatch.setattr(site, "fmt_cell", lambda c: real(c) + (" ★" if isinstance(c, dict) and c.get("star") else ""))
    starred = site.site_cell({**acc_cell(0.65, (0.55, 0.74)), "star": True})
    assert starred["parts"] == [["v", "65.0 [55–74] ★"]] and starred["value"] == 0.65
    assert '<td data-v="0.65"><span class="v">65.0 [55–74] ★</span></td>' == site._cell_html(starred, False)
