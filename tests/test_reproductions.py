"""leaderboards/reproductions.md: every paper number a published board quotes, beside ours (issue 29)."""

from __future__ import annotations

import shutil
from pathlib import Path

from bench.report.board import board
from bench.report.board_index import write_index
from bench.report.reproductions import reproduction_rows, write_reproductions
from bench.spec import grid
from bench.track.results import load_records

LB = Path(__file__).resolve().parents[1] / "leaderboards"


def test_rows_carry_each_quoted_number_with_our_interval():
    spec = grid.load("deep-defense-mnist")
    rows = reproduction_rows(board(load_records(LB / "deep-defense-mnist" / "records.jsonl"), spec))
    by_key = {(r["row"], r["column"]): r for r in rows}
    pgd = by_key[("standard/none", "pgd")]
    assert pgd["paper"] == spec.reference["standard/none/pgd"]
    lo, hi = pgd["ci"]
    assert pgd["inside"] == (100 * lo <= pgd["paper"] <= 100 * hi)
    assert any(r["inside"] for r in rows) and any(r["inside"] is False for r in rows)  # both verdicts occur
    for r in rows:
        if r["kind"] == "acc":
            assert r["inside"] == (100 * r["ci"][0] <= r["paper"] <= 100 * r["ci"][1])
        else:
            assert r["inside"] is None and r["ci"] is None  # metrics have no interval: no verdict
    assert len(rows) == len(spec.reference)  # every quoted number of this grid has a cell


def test_page_covers_the_boards_with_paper_numbers_only(tmp_path):
    for name in ("deep-defense-mnist", "ride-bpda-mnist", "eot-strength-digits"):
        shutil.copytree(LB / name, tmp_path / name)
        shutil.copy(LB / f"{name}.md", tmp_path / f"{name}.md")
    page = write_reproductions(tmp_path, load_records).read_text()
    assert "[deep-defense-mnist](#deep-defense-mnist)" in page and "## [ride-bpda-mnist](ride-bpda-mnist.md)" in page
    assert "eot-strength-digits" not in page  # its grid quotes no paper number
    assert "| standard/none | pgd | 51.0 [46–56] | 26.17 | **outside** |" in page
    index = write_index(tmp_path).read_text()
    assert "[reproductions.md](reproductions.md)" in index
    assert "| [reproductions]" not in index  # the page is not listed as a board
