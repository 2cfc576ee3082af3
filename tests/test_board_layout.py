"""Leaderboards that fit a screen (issue 32): tables of at most about 12 columns, a row that lost more
than 10 points of clean accuracy never ranked above the undefended model, wiring-check boards titled
as such, the exact Reproduce command, code versions explained, and a local run compared with the
published board."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.core.errors import BenchError
from bench.core.stats import wilson_interval
from bench.report.board import MAX_COLUMNS, board, headline_rows
from bench.report.compare import compare_markdown, compare_records, comparison_line
from bench.report.grid_figures import interval_band
from bench.report.leaderboard import render
from bench.spec import grid
from bench.spec.labels import attack_label


def rec(cid: str, attack: str, per_example: str, eps: float | None = 0.1, threat: str = "base",
        runtime: str = "none", train: str = "standard", clean: float = 0.95, **extra) -> dict:
    return {"cell_id": cid, "key": f"{train}/{runtime}/{attack}/{threat}/{eps}", "status": "ok",
            "train_defense": train, "runtime_defense": runtime, "attack": attack, "attack_name": attack,
            "threat": threat, "eps": eps, "norm": "L2" if eps is None else "Linf", "clean_acc": clean,
            "n": len(per_example), "seed": 0, "robust_acc": per_example.count("1") / len(per_example),
            "per_example": per_example, "code_version": "0.1.0+abc1234", **extra}


def default_records(spec) -> list[dict]:
    """One seeded record per cell of a grid: the widest board the shipped grids give."""
    out = []
    for i, c in enumerate(spec.cells()):
        k = 20 + (7 * i) % 60
        out.append(rec(c.cell_id, c.attack_label, "1" * k + "0" * (100 - k), eps=c.eps, threat=c.threat,
                       runtime=c.runtime_defense, train=c.train_defense, median_norm=0.5 if c.eps is None else None))
    return out


def pipe_tables(markdown: str) -> list[list[str]]:
    tables, current = [], []
    for line in markdown.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables + ([current] if current else [])


def test_every_table_of_the_default_board_fits_a_screen():
    spec = grid.load("default")
    records = default_records(spec)
    model = board(records, spec)
    tables = [t for tm in model["threat_models"] for t in tm["tables"]]
    assert tables and all(len(t["columns"]) <= MAX_COLUMNS for t in tables + model["minimal_norm"])
    # every attack cell of the grid lands in exactly one table
    shown = sum(1 for t in tables for row in t["rows"] for c in t["columns"][3:-1]
                if isinstance(row.get(c), dict)) + sum(
        1 for t in model["minimal_norm"] for row in t["rows"] for c in t["columns"][2::3]
        if isinstance(row.get(c), dict))
    assert shown == len(records)
    text = render(records, spec)
    widths = [t[0].count("|") - 1 for t in pipe_tables(text)]
    assert widths and max(widths) <= MAX_COLUMNS, widths
    assert "## All cells" not in text
    assert text.index("## Headline") < text.index("## Robust accuracy per threat model") \
        < text.index("## Minimal-norm attacks") < text.index("Reproduce:")


def test_a_row_that_lost_clean_accuracy_is_never_ranked_above_the_undefended_model():
    base = "1" * 40 + "0" * 60
    records = [rec("a", "pgd", base, clean=0.95),
               rec("b", "pgd", "1" * 70 + "0" * 30, runtime="median", clean=0.60),  # more robust, 35 points worse clean
               rec("c", "pgd", "1" * 60 + "0" * 40, runtime="tvm", clean=0.85),  # exactly 10 points: not marked
               rec("d", "pgd", "1" * 20 + "0" * 80, runtime="ride", clean=0.05)]  # below the baseline anyway
    spec = grid.parse({"dataset": "digits", "arch": "small-cnn", "runtime": {"none": {}, "median": {}, "tvm": {},
                                                                              "ride": {}}}, "g")
    rows = headline_rows(records, spec, ("Linf", 0.1))
    order = [h["runtime"] for h in rows]
    assert order == ["tvm", "none", "median", "ride"]
    assert [h["clean_drop"] for h in rows] == [False, False, True, True]
    text = render(records, spec)
    assert "| 3 | standard | median | 60.0 [50–70] ▼ | 70.0 [60–79] |" in text
    assert "| 2 | standard | none | 95.0 [88–98] | 40.0 [30–50] | 1 | above by the clean-accuracy rule" in text
    assert "standard/median (35.0 points lower), standard/ride (90.0 points lower)" in text
    # without the undefended row there is nothing to compare with: plain ranking by the worst case
    assert [h["runtime"] for h in headline_rows(records[1:], spec, ("Linf", 0.1))] == ["median", "tvm", "ride"]


def test_wiring_check_boards_say_so_in_title_headline_and_index(tmp_path):
    from bench.report.board_index import write_index

    spec = grid.load("imagenet-rmc")
    assert spec.wiring_check and grid.load("imagenet-ride").wiring_check and not grid.load("default").wiring_check
    records = default_records(spec)
    text = render(records, spec)
    assert text.splitlines()[1] == "# Leaderboard: imagenet-rmc (wiring check, not a measurement)"
    assert "## Headline (wiring check: not a ranking of the defenses)" in text
    assert "wiring_check=1" in text.splitlines()[0]
    (tmp_path / "imagenet-rmc.md").write_text(text)
    (tmp_path / "default.md").write_text(render(default_records(grid.load("default")), grid.load("default")))
    index = write_index(tmp_path).read_text()
    assert "[imagenet-rmc](imagenet-rmc.md) (wiring check, not a measurement" in index
    assert "[default](default.md) |" in index
    bad = tmp_path / "bad.toml"
    bad.write_text('dataset = "digits"\narch = "small-cnn"\nwiring_check = "yes"\n')
    from bench.core.errors import BenchError

    with pytest.raises(BenchError, match="wiring_check must be true or false"):
        grid.load(str(bad))


def test_reproduce_is_the_exact_command_for_a_grid_file_with_limit(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('name = "mine"\ndataset = "digits"\narch = "small-cnn"\n[[attacks]]\nname = "fgsm"\neps = 0.1\n')
    spec = grid.load(str(path))
    records = [rec(c.cell_id, "fgsm", "1100") for c in spec.cells(limit=4)]
    text = render(records, spec, limit=4, data_dir="/data/digits")
    assert (f"Reproduce: `git checkout abc1234 && bench run --grid {path} --limit 4 --data-dir /data/digits && "
            f"bench leaderboard --grid {path} --limit 4`.") in text
    builtin = grid.load("default")
    assert "Reproduce: `git checkout abc1234 && bench run --grid default && bench leaderboard --grid default`." \
        in render([rec("x", "fgsm", "10")], builtin)


def test_mixed_code_versions_are_explained_row_by_row():
    records = [rec("a", "fgsm", "1100"), rec("b", "pgd", "1000"),
               rec("c", "fgsm", "1110", runtime="median", code_version="0.1.0+def5678"),
               rec("d", "pgd", "1100", runtime="median")]
    spec = grid.parse({"dataset": "digits", "arch": "small-cnn", "runtime": {"none": {}, "median": {}}}, "g")
    text = render(records, spec)
    assert "- `0.1.0+def5678` (1 cells): cells standard/median fgsm Linf 0.1\n- `0.1.0+abc1234` (3 cells): every " \
        "other cell" in text
    records[0]["code_version"] = records[1]["code_version"] = "0.1.0+def5678"  # a whole row and one cell
    assert "- `0.1.0+abc1234` (1 cells): cells standard/median pgd Linf 0.1\n" in render(records, spec)
    assert "- `0.1.0+def5678` (3 cells): every other cell" in render(records, spec)
    assert "with the current code: this board mixes code versions" in text and "git checkout" not in text


def test_a_local_run_is_compared_with_the_published_board():
    spec = grid.parse({"dataset": "digits", "arch": "small-cnn", "runtime": {"none": {}, "median": {}}}, "g")
    pub = [rec("a", "pgd", "1" * 50 + "0" * 50), rec("b", "pgd", "1" * 60 + "0" * 40, runtime="median")]
    same = comparison_line(compare_records(pub, pub, spec), "leaderboards/g.md")
    assert same == ("agrees with leaderboards/g.md: 2 of 2 rows inside the published 95% intervals "
                    "(worst case under Linf 0.1)")
    # 39 of 100 robust: outside [40.4, 59.6], but only 11 examples changed, all one way: McNemar p < 0.05 -> differs
    local = [rec("a", "pgd", "1" * 39 + "0" * 61), pub[1]]
    line = comparison_line(compare_records(local, pub, spec), "leaderboards/g.md")
    assert line.startswith("differs from leaderboards/g.md: 1 of 2 rows inside") and "standard/none (39.0% here" in line
    # 61 of 100, reached by swapping outcomes on many examples both ways: outside the interval, but the
    # paired exact test cannot tell the two runs apart
    swapped = "0" * 20 + "1" * 30 + "1" * 31 + "0" * 19
    local = [rec("a", "pgd", swapped), pub[1]]
    line = comparison_line(compare_records(local, pub, spec), "leaderboards/g.md")
    assert "1 outside but not distinguishable by an exact McNemar test (p >= 0.05): standard/none" in line
    assert line.startswith("agrees with")
    # a board published without records: read from its headline table
    md = render(pub, spec)
    assert comparison_line(compare_markdown(pub, md, spec), "x.md").startswith("agrees with x.md: 2 of 2 rows")
    fewer = [rec("a", "pgd", "1" * 5 + "0" * 5)]
    assert "this run 10 (--limit)" in comparison_line(compare_records(fewer, pub, spec), "x.md")
    assert comparison_line(None, "x.md") == "no published board to compare"


def test_stream_figures_get_a_wilson_band():
    line = {"x": [1, 2, 10], "y": [100.0, 50.0, 70.0], "n": [1, 2, 10]}
    lo, hi = interval_band(line)
    assert [round(v, 6) for v in lo] == [round(100 * wilson_interval(k, n)[0], 6) for k, n in ((1, 1), (1, 2), (7, 10))]
    assert all(a <= y <= b for a, y, b in zip(lo, line["y"], hi))
    assert interval_band({"x": [1], "y": [1.0]}) is None


def test_board_is_plain_data():
    spec = grid.load("ci")
    model = board(default_records(spec), spec)
    assert json.loads(json.dumps(model)) == model  # lists, dicts, numbers and strings only
    assert re.match(r"bench run --grid ci", model["reproduce"].split(" && ")[1])


QUICK = """name = "quick"
description = "A two-row digits grid for the quick-start check."
dataset = "digits"
arch = "tiny-cnn"
limit = 20
[train.standard]
epochs = 1
[runtime.none]
[runtime.median]
[[attacks]]
name = "fgsm"
eps = 0.1
"""


@pytest.mark.slow
def test_quick_start_leaves_the_clone_clean_and_compares_with_the_published_board(tmp_path):
    """``bench run`` from the root of a checkout, as the README's quick start does (default cache,
    MLflow store, results folder): ``git status`` stays clean, and the run ends with one line
    comparing it with the published board."""
    root = Path(__file__).resolve().parents[1]
    repo = tmp_path / "clone"
    repo.mkdir()
    shutil.copy(root / ".gitignore", repo / ".gitignore")
    (repo / "quick.toml").write_text(QUICK)
    env = {k: v for k, v in os.environ.items() if k not in ("BENCH_CACHE_DIR", "MLFLOW_TRACKING_URI", "BENCH_JOBS")}
    env["PYTHONPATH"] = str(root)

    def sh(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    def git(*args: str) -> str:
        return sh("git", "-c", "user.email=t@example.org", "-c", "user.name=t", *args).stdout

    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "clone")
    out = sh(sys.executable, "-m", "bench", "run", "--grid", "quick.toml").stdout
    assert "leaderboard written to results/leaderboards/quick.md" in out
    assert "\nno published board to compare\n" in out
    assert (repo / "mlflow.db").is_file() and (repo / ".bench-cache").is_dir()  # it did write them
    assert git("status", "--porcelain") == ""
    sh(sys.executable, "-m", "bench", "leaderboard", "--grid", "quick.toml", "--publish")
    assert (repo / "leaderboards" / "quick" / "records.jsonl").is_file()
    git("add", "-A")
    git("commit", "-qm", "publish")
    shutil.rmtree(repo / "results")  # a second clone's run: same code, same machine, same numbers
    out = sh(sys.executable, "-m", "bench", "run", "--grid", "quick.toml", "--no-tracking").stdout
    assert ("agrees with leaderboards/quick.md: 2 of 2 rows inside the published 95% intervals "
            "(worst case under Linf 0.1)") in out
    assert git("status", "--porcelain") == ""


def test_columns_follow_the_grid_file_whatever_order_the_cells_finished_in():
    spec = grid.load("default")
    records = default_records(spec)
    shuffled = list(reversed(records))
    assert board(shuffled, spec)["threat_models"] == board(records, spec)["threat_models"]
    assert render(shuffled, spec) == render(records, spec)
    first = board(shuffled, spec)["threat_models"][0]["tables"][0]["columns"]
    attacks = first[3:-1]
    listed = [attack_label({"attack": a.label or a.name, "threat": a.threat}) for a in spec.attacks]
    assert len(attacks) > 3 and attacks == sorted(attacks, key=listed.index)


def test_figure_3_over_seeds_is_the_mean_and_spread_of_the_seeds_running_accuracies(tmp_path):
    """rmc-seeds-digits' Figure 3: per stream position, the mean over seeds of each seed's running
    accuracy and mean -/+ one standard deviation, computed here by hand from the published records."""
    from bench.report.grid_figures import draw, figure_series

    spec = grid.load("rmc-seeds-digits")
    path = Path(__file__).resolve().parents[1] / "leaderboards" / "rmc-seeds-digits" / "records.jsonl"
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    fig = next(f for f in spec.figures if f["metric"] == "robust_acc")
    (line,) = figure_series(recs, fig)
    runs = [r["per_point"]["correct"] for r in recs if r["runtime_defense"] == "rmc"]
    assert len(runs) == 3 and line["label"] == "rmc: pgd (mean of 3 seeds)"
    for t in (1, 10, len(line["x"])):
        accs = [100 * sum(c == "1" for c in bits[:t]) / t for bits in runs]
        mean = sum(accs) / 3
        sd = (sum((a - mean) ** 2 for a in accs) / 3) ** 0.5
        assert line["y"][t - 1] == pytest.approx(mean)
        lo, hi = line["spread"]
        assert lo[t - 1] == pytest.approx(mean - sd) and hi[t - 1] == pytest.approx(mean + sd)
    assert draw([line], fig, tmp_path / "f.png").is_file()
    with pytest.raises(BenchError, match="over_seeds"):
        grid.parse({"name": "g", "dataset": "digits", "arch": "small-cnn", "train": {"standard": {}},
                    "runtime": {"none": {}}, "attacks": [{"name": "pgd", "eps": 0.1}],
                    "figures": [{"kind": "vs-eps", "over_seeds": True}]})
