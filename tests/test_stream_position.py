"""Accuracy at stream position p (RMC, ICML 2020: Table 5, supplement Table 3): a window of w points
after p points of one stream, with a Wilson interval; clipped at the stream's end; bad [[positions]]
tables are one-line errors."""

from __future__ import annotations

import sys

import pytest

from bench.core.errors import BenchError
from bench.core.stats import wilson_interval
from bench.core.stream_position import accuracy_at, record_accuracy_at
from bench.report.board import board, fmt_cell
from bench.report.leaderboard import render
from bench.spec import grid

# A 12-point stream, in stream order (position 1 first).
STREAM = "110100111010"

GRID = """
name = "pos-tiny"
dataset = "digits"
arch = "small-cnn"
limit = 12
[train.standard]
[runtime.rmc]
[[attacks]]
name = "pgd-skip"
threat = "adaptive"
eps = 0.2
runtime = ["rmc"]
[[attacks]]
name = "pgd-skip-delayed"
label = "skip-delayed-q2"
threat = "adaptive"
eps = 0.2
params = { q = 2 }
runtime = ["rmc"]
[[positions]]
p = [3, 8]
window = 4
attacks = ["pgd-skip", "skip-delayed-q2"]
[reference]
"standard/rmc/pgd-skip (adaptive) @ p=3" = 25.3
"""


def _spec(text: str = GRID):
    import tomllib

    return grid.parse(tomllib.loads(text), path="g.toml")


def _rec(attack: str, correct: str) -> dict:
    return {"cell_id": attack, "key": f"standard/rmc/{attack}", "status": "ok", "train_defense": "standard",
            "runtime_defense": "rmc", "attack": attack, "attack_name": attack, "threat": "adaptive", "eps": 0.2,
            "norm": "Linf", "clean_acc": 1.0, "n": len(correct), "seed": 0,
            "robust_acc": correct.count("1") / len(correct),
            "per_example": correct, "per_point": {"index": list(range(len(correct))), "correct": correct},
            "code_version": "0.1.0+abc1234"}


def test_window_after_p_equals_a_hand_count():
    # after 3 points: positions 4..7 = "1001" -> 2 of 4; delay 2 (PGD-Skip-Delayed): positions 6..9 = "0111"
    w = accuracy_at(STREAM, 3, 4)
    assert (w.start, w.end, w.hits, w.n, w.clipped) == (3, 7, 2, 4, False)
    assert w.accuracy == 0.5 and w.ci == wilson_interval(2, 4)
    d = record_accuracy_at(_rec("x", STREAM), 3, 4, delay=2)
    assert (d.start, d.end, d.hits, d.n) == (5, 9, 3, 4)
    assert accuracy_at(STREAM, 0, 12).hits == STREAM.count("1")
    assert record_accuracy_at({"per_point": {}}, 0, 1) is None


def test_window_past_the_end_is_clipped_and_says_so():
    w = accuracy_at(STREAM, 10, 4)  # positions 11, 12 only
    assert (w.n, w.hits, w.clipped, w.end) == (2, 1, True, 12)
    with pytest.raises(BenchError, match="beyond the stream's 12 points"):
        accuracy_at(STREAM, 12, 1)


def test_board_shows_position_columns_with_interval_reference_and_clipping():
    spec = _spec()
    model = board([_rec("pgd-skip", STREAM), _rec("skip-delayed-q2", "000001111000")], spec)
    (table,) = model["positions"]
    assert table["columns"] == ["train-time", "runtime", "pgd-skip (adaptive) @ p=3", "pgd-skip (adaptive) @ p=8",
                                "skip-delayed-q2 (adaptive) @ p=3", "skip-delayed-q2 (adaptive) @ p=8"]
    (row,) = table["rows"]
    at3 = row["pgd-skip (adaptive) @ p=3"]
    assert at3["value"] == 0.5 and at3["ci"] == list(wilson_interval(2, 4)) and at3["ref"] == 25.3
    # delay 2: p = 3 reads positions 6..9 of "000001111000" -> 4 of 4; p = 8 reads 11..12 -> clipped, 0 of 2
    assert row["skip-delayed-q2 (adaptive) @ p=3"]["value"] == 1.0
    clipped = row["skip-delayed-q2 (adaptive) @ p=8"]
    assert clipped["value"] == 0.0 and clipped["clipped"]
    assert fmt_cell(clipped).startswith("0.0 [") and "✂" in fmt_cell(clipped)
    assert "✂" not in fmt_cell(row["pgd-skip (adaptive) @ p=8"])  # positions 9..12 exist
    assert any("clipped to positions 11-12 (2 of 4 points" in n for n in table["notes"])
    text = render([_rec("pgd-skip", STREAM), _rec("skip-delayed-q2", "000001111000")], spec)
    assert "## Accuracy at stream position p" in text and "50.0 [" in text and "(25.3" in text


def test_a_shorter_run_than_the_grid_says_which_columns_it_cannot_show():
    spec = _spec()  # p = 8 needs more than the 4 points a --limit 4 (or --smoke) run keeps
    (table,) = board([_rec("pgd-skip", "1101")], spec)["positions"]
    assert table["columns"][2:] == ["pgd-skip (adaptive) @ p=3"]
    assert table["rows"][0]["pgd-skip (adaptive) @ p=3"]["value"] == 1.0  # position 4 only: clipped
    assert any(n.startswith("1 column(s) not shown") and "standard/rmc pgd-skip (adaptive) @ p=8" in n
               for n in table["notes"])


@pytest.mark.parametrize("positions, msg", [
    ("p = [-1]\nwindow = 4", "p must be a list of integers >= 0"),
    ("p = []\nwindow = 4", "p must be a list of integers >= 0"),
    ("p = [3]\nwindow = 0", "window must be a positive integer"),
    ("p = [3]\nwindow = 1.5", "window must be a positive integer"),
    ("p = [3]", "window must be a positive integer"),
    ("p = [12]\nwindow = 4", "leaves no point of the 12-point stream of pgd-skip; use p < 12"),
    ("p = [10]\nwindow = 4\nattacks = [\"skip-delayed-q2\"]", "p + q = 10 + 2 leaves no point"),
    ("p = [3]\nwindow = 4\nattacks = [\"pgd-skipp\"]", "not an attack label of this grid"),
    ("p = [3]\nwindow = 4\nwidth = 2", "unknown keys width"),
])
def test_bad_positions_are_one_line_errors(positions, msg):
    text = GRID.replace("p = [3, 8]\nwindow = 4\nattacks = [\"pgd-skip\", \"skip-delayed-q2\"]", positions)
    text = text.split("[reference]")[0]
    with pytest.raises(BenchError, match=msg.replace("[", r"\[").replace("+", r"\+")) as exc:
        _spec(text)
    assert "\n" not in str(exc.value) and str(exc.value).startswith("g.toml: positions[0]")


def test_bad_positions_in_a_grid_file_exit_with_one_line(tmp_path, capsys):
    from bench.cli import main

    path = tmp_path / "bad.toml"
    path.write_text(GRID.replace("window = 4", "window = -2"))
    old, sys.argv = sys.argv, ["bench", "run", "--grid", str(path), "--dry-run", "--no-tracking"]
    try:
        with pytest.raises(SystemExit) as exc:
            main()
    finally:
        sys.argv = old
    err = capsys.readouterr().err.strip()
    assert exc.value.code != 0 and "Traceback" not in err
    assert len(err.splitlines()) == 1 and "window must be a positive integer (points per window), got -2" in err


def test_reference_key_of_a_missing_position_column_is_refused():
    with pytest.raises(BenchError, match="matches no leaderboard cell"):
        _spec(GRID.replace("@ p=3", "@ p=4"))


def test_shipped_digits_grid_reports_the_paper_positions_scaled():
    spec = grid.load("rmc-defense-aware-digits")
    from bench.spec.position_columns import position_columns

    cols = [c for c, *_ in position_columns(spec, "rmc-plus")]
    assert "skip-delayed-q40 (adaptive) @ p=40" in cols and "skip-partial-70 (adaptive) @ p=60" in cols
    assert spec.limit == 100 and {a.eps for a in spec.attacks} == {(0.2,)}


@pytest.mark.parametrize("name", ["rmc-defense-aware-digits", "rmc-defense-aware-cifar10"])
def test_table_5_delta_columns_are_three_rmc_plus_rows_under_the_skip_family(name):
    """RMC Table 5: RMC+ at delta 0.5 / 0.75 / 1, each under PGD-Skip, -Delayed and -Partial only."""
    import inspect

    import defenses

    default = inspect.signature(defenses.DEFENSES.get("rmc-plus").__init__).parameters["delta"].default
    spec = grid.load(name)
    rows = {"rmc-plus": 0.5, "rmc-plus@delta0.75": 0.75, "rmc-plus@delta1": 1.0}
    cells = list(spec.cells())
    for row, delta in rows.items():
        assert float(spec.runtime[row].get("delta", default)) == delta
        attacks = {c.attack for c in cells if c.runtime_defense == row}
        assert {"pgd-skip", "pgd-skip-delayed", "pgd-skip-partial"} <= attacks
        assert row == "rmc-plus" or attacks == {"pgd-skip", "pgd-skip-delayed", "pgd-skip-partial"}
    if name.endswith("cifar10"):  # every number of Table 5 (a) and (b) has a cell
        table5 = [k for k in spec.reference if k.startswith("standard/rmc-plus") and " @ p=" in k]
        assert len(table5) == 3 * (2 * 3 + 3 * 3)
