"""`bench list`: a full one-line description for every registered entry, and `--json`."""

from __future__ import annotations

import json

import pytest

from bench.core.registry import describe
from tests.test_cli import bench

KINDS = ("attacks", "defenses", "datasets", "archs")


def test_describe_takes_the_whole_first_paragraph():
    def f():
        """First line of a summary
        that wraps onto a second line.

        Details nobody lists."""

    assert describe(f) == "First line of a summary that wraps onto a second line."
    assert describe(lambda: None) == ""


@pytest.mark.parametrize("what", KINDS)
def test_every_entry_has_a_full_one_line_description(tmp_path, what):
    proc = bench("list", what, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert len(rows) >= 5 and len({r["name"] for r in rows}) == len(rows)
    for row in rows:
        desc = row["description"]
        # Non-empty, one line, a complete sentence (not cut mid-sentence), short enough for a terminal.
        assert desc and "\n" not in desc, row
        assert desc.endswith((".", ")")), row
        assert len(desc) <= 130, row
        assert row["origin"] == "builtin"
    if what == "defenses":
        assert {r["kind"] for r in rows} == {"train", "runtime"}
    # The table shows the same descriptions, one line per entry.
    table = bench("list", what, cwd=tmp_path).stdout.splitlines()
    assert len(table) == len(rows)
    for line, row in zip(table, rows):
        assert line.startswith(row["name"]) and line.endswith(row["description"])


def test_list_grids_json(tmp_path):
    proc = bench("list", "grids", "--json", cwd=tmp_path, env={"BENCH_WEIGHTS_DIR": None})
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["default"]["dataset"] == "digits" and rows["default"]["cells"] == 166
    assert all(r["description"] for r in rows.values())
    # A grid whose checkpoint lives under an unset $BENCH_WEIGHTS_DIR: no count, the reason instead.
    pre = rows["cifar10-pretrained"]
    assert pre["cells"] is None and "BENCH_WEIGHTS_DIR" in pre["cells_error"]
