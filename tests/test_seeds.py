"""Several seeds per grid (``seeds = [0, 1, 2]``): one cell per seed, records that carry their seed,
resumption per (cell, seed), and boards that show the mean over seeds with its spread beside the
pooled Wilson interval (the RMC supplement's Figure 3 reports variance over runs)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bench.core.errors import BenchError
from bench.core.stats import wilson_interval
from bench.report.board import board, fmt_cell, pool_seeds
from bench.report.leaderboard import render
from bench.spec import grid

TWO = """
name = "two"
dataset = "digits"
arch = "small-cnn"
limit = 20
{seed_line}
[train.standard]
epochs = 2
[runtime.none]
[[attacks]]
name = "fgsm"
eps = 0.3
"""


def _spec(tmp_path: Path, seed_line: str = "seeds = [0, 1, 2]") -> grid.GridSpec:
    path = tmp_path / "two.toml"
    path.write_text(TWO.format(seed_line=seed_line))
    return grid.load(str(path))


@pytest.mark.parametrize("line, says", [
    ("seed = 0\nseeds = [0, 1]", "either seed = N or seeds"),
    ("seeds = []", "non-empty list"),
    ("seeds = 3", "non-empty list"),
    ("seeds = [0, 1, 1]", "seed 1 is listed twice"),
    ("seeds = [0, -1]", "integers in [0, 2**63)"),
    ("seeds = [0, true]", "integers in [0, 2**63)"),
])
def test_bad_seeds_are_one_line(tmp_path: Path, line: str, says: str) -> None:
    with pytest.raises(BenchError) as exc:
        _spec(tmp_path, line)
    assert says in str(exc.value) and "\n" not in str(exc.value)


def test_each_cell_once_per_seed(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    cells = spec.cells()
    assert [c.seed for c in cells] == [0, 1, 2] and spec.seed == 0
    assert len({c.cell_id for c in cells}) == 3  # resumption and claims go by (cell, seed)
    assert [c.key for c in cells] == [f"standard/none/fgsm/base/0.3/seed{s}" for s in (0, 1, 2)]
    # --seed 1 runs that seed's cell of the same grid, not a new one
    assert [c.cell_id for c in spec.cells(seed=1)] == [cells[1].cell_id]
    # a single-seed grid keeps its keys and cell ids: they do not depend on the seeds machinery
    one = _spec(tmp_path, "seed = 1").cells()
    assert [c.key for c in one] == ["standard/none/fgsm/base/0.3"] and one[0].cell_id == cells[1].cell_id


def _rec(seed: int, clean: str, robust: str, attack: str = "fgsm") -> dict:
    return {"status": "ok", "key": f"standard/none/{attack}/base/0.3/seed{seed}", "cell_id": f"{attack}{seed}",
            "train_defense": "standard", "runtime_defense": "none", "attack": attack, "attack_name": attack,
            "threat": "base", "eps": 0.3, "norm": "Linf", "seed": seed, "n": len(robust),
            "clean_acc": clean.count("1") / len(clean), "robust_acc": robust.count("1") / len(robust),
            "per_example": robust}


def test_pooled_cell_is_the_mean_with_its_spread_and_pooled_interval() -> None:
    recs = [_rec(0, "1111", "1100"), _rec(1, "1110", "1000"), _rec(2, "1111", "1110")]
    (pooled,) = pool_seeds(recs)
    assert pooled["robust_acc"] == pytest.approx((0.5 + 0.25 + 0.75) / 3)
    assert pooled["seed_spread"] == {"clean": [0.75, 1.0], "robust": [0.25, 0.75]}
    assert pooled["robust_ci"] == pytest.approx(list(wilson_interval(6, 12)))
    assert pooled["clean_ci"] == pytest.approx(list(wilson_interval(11, 12)))
    # the row's worst case pairs the same example under the same seed: AND of fgsm and pgd per seed
    recs += [_rec(0, "1111", "0100", "pgd"), _rec(1, "1110", "1000", "pgd"), _rec(2, "1111", "0110", "pgd")]
    spec = grid.parse({"dataset": "digits", "arch": "small-cnn", "seeds": [0, 1, 2],
                       "attacks": [{"name": "fgsm", "eps": 0.3}, {"name": "pgd", "eps": 0.3}]})
    model = board(recs, spec)
    (table,) = model["threat_models"][0]["tables"]
    (row,) = table["rows"]
    worst = row[table["columns"][-1]]  # per seed 1/4, 1/4, 2/4
    assert worst["value"] == pytest.approx(4 / 12) and worst["spread"] == [0.25, 0.5]
    assert fmt_cell(row["fgsm"]) == "50.0 [25–75] {25.0–75.0}"
    assert model["seeds"] == [0, 1, 2] and "spread over seeds" in model["seeds_note"]


def test_single_seed_board_is_unchanged() -> None:
    recs = [_rec(0, "1111", "1100")]
    spec = grid.parse({"dataset": "digits", "arch": "small-cnn", "attacks": [{"name": "fgsm", "eps": 0.3}]})
    assert pool_seeds(recs) is recs
    text = render(recs, spec)
    assert "{" not in text and "Seeds" not in text and "seed 0;" in text


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    from bench.run.runner import Runner, RunOptions

    tmp = tmp_path_factory.mktemp("seeds")
    spec = _spec(tmp)
    opts = RunOptions(cache_dir=tmp / "cache", results_dir=tmp / "results", tracking=False, progress=False)
    summary = Runner(spec, opts).run()
    return tmp, spec, opts, summary


@pytest.mark.slow
def test_three_seeds_give_three_records_and_the_board_shows_their_mean(ran) -> None:
    tmp, spec, _, summary = ran
    assert summary.ran == 3 and summary.failed == 0
    records = [json.loads(line) for line in (tmp / "results" / "two.jsonl").read_text().splitlines()]
    assert sorted(r["seed"] for r in records) == [0, 1, 2]
    assert all(r["status"] == "ok" and r["key"].endswith(f"/seed{r['seed']}") for r in records)
    assert len({r["clean_acc"] for r in records} | {r["robust_acc"] for r in records}) > 1  # seeds differ
    robust = [r["robust_acc"] for r in records]
    n = records[0]["n"]
    cell = board(records, spec)["threat_models"][0]["tables"][0]["rows"][0]["fgsm"]
    assert cell["value"] == pytest.approx(sum(robust) / 3)
    assert cell["spread"] == pytest.approx([min(robust), max(robust)])
    assert cell["ci"] == pytest.approx(list(wilson_interval(sum(round(a * n) for a in robust), 3 * n)))
    text = render(records, spec)
    assert fmt_cell(cell) in text and "Seeds 0, 1, 2" in text


@pytest.mark.slow
def test_resumed_run_skips_finished_cell_seed_pairs(ran) -> None:
    from bench.run.runner import Runner

    tmp, spec, opts, _ = ran
    path = tmp / "results" / "two.jsonl"
    lines = path.read_text().splitlines()
    kept = [ln for ln in lines if json.loads(ln)["seed"] != 1]
    path.write_text("\n".join(kept) + "\n")
    summary = Runner(spec, opts).run()
    assert summary.ran == 1 and summary.skipped_done == 2
    assert sorted(json.loads(ln)["seed"] for ln in path.read_text().splitlines()) == [0, 1, 2]


def test_site_page_shows_the_pooled_cells() -> None:
    from bench.report.site import BoardInput, board_model, render_board

    recs = [_rec(0, "1111", "1100"), _rec(1, "1110", "1000"), _rec(2, "1111", "1110")]
    spec = grid.parse({"dataset": "digits", "arch": "small-cnn", "seeds": [0, 1, 2],
                       "attacks": [{"name": "fgsm", "eps": 0.3}]})
    model = board_model(BoardInput(spec, recs))
    page = render_board(model, [])
    assert model["seeds"] == ["0", "1", "2"] and model["cells"] == 1
    shown = re.sub(r"<[^>]+>", "", page)  # a cell's text, its parts styled apart
    assert "50.0 [25–75] {25.0–75.0}" in shown and "spread over seeds" in page


def test_pictures_draw_the_pooled_cells(tmp_path: Path) -> None:
    from bench.report import plots

    seen = []
    real = plots.write_figures

    def spy(records, *a, **kw):
        seen.append(records)
        return real(records, *a, **kw)

    recs = [_rec(0, "1111", "1100"), _rec(1, "1110", "1000"), _rec(2, "1111", "1110")]
    spec = grid.parse({"dataset": "digits", "arch": "small-cnn", "seeds": [0, 1, 2],
                       "attacks": [{"name": "fgsm", "eps": 0.3}]})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plots, "write_figures", spy)
        render(recs, spec, figures_dir=tmp_path)
    (records,) = seen
    assert len(records) == 1 and records[0]["per_example"] == "110010001110"


def test_a_cell_missing_a_seed_is_named_and_paired_on_the_seeds_both_rows_ran() -> None:
    from bench.core.stats import mcnemar

    none = [_rec(s, "1111", out) for s, out in ((0, "0000"), (1, "1000"), (2, "0010"))]
    rmc = [{**_rec(s, "1111", out), "runtime_defense": "rmc", "key": f"standard/rmc/fgsm/base/0.3/seed{s}",
            "cell_id": f"rmc{s}"} for s, out in ((0, "1111"), (2, "1110"))]
    spec = grid.parse({"dataset": "digits", "arch": "small-cnn", "seeds": [0, 1, 2], "runtime": {"none": {}, "rmc": {}},
                       "attacks": [{"name": "fgsm", "eps": 0.3}]})
    model = board(none + rmc, spec)
    assert model["fewer_seeds"] == ["standard/rmc/fgsm/base/0.3 (seeds 0, 2)"]
    top, _ = model["threat_models"][0]["headline"]
    assert top["runtime"] == "rmc"
    _, _, p = mcnemar("11111110", "00000010")  # seeds 0 and 2 only: rmc's then none's outcomes
    assert f"p = {p:.2g}" in top["vs next row (McNemar)"]
    assert "Cells with fewer seeds" in render(none + rmc, spec)
