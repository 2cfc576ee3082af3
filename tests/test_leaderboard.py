"""Leaderboards a reviewer can trust (issue 14): worst case per threat model, intervals, McNemar,
budgets in headers, minimal-norm columns, the adaptive-not-stronger flag, pictures and the index."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.core.stats import interval_of, mcnemar, wilson_interval
from bench.report.flags import cell_flags
from bench.report.leaderboard import build_table, headline, main_budget, render
from bench.spec import grid


def rec(cid: str, attack: str, per_example: str, eps: float | None = 0.1, norm: str = "Linf", threat: str = "base",
        runtime: str = "none", train: str = "standard", **extra) -> dict:
    return {"cell_id": cid, "key": f"{train}/{runtime}/{attack}/{threat}/{eps}", "status": "ok",
            "train_defense": train, "runtime_defense": runtime, "attack": attack, "attack_name": attack,
            "threat": threat, "eps": eps, "norm": norm, "clean_acc": 0.9, "n": len(per_example), "seed": 0,
            "robust_acc": per_example.count("1") / len(per_example), "per_example": per_example, **extra}


SPEC = grid.parse({"dataset": "digits", "arch": "small-cnn"}, "g")


def test_worst_case_never_mixes_budgets():
    # One row, 8 examples: two attacks at Linf 0.1, one at Linf 0.2, one L2 1.0 and a minimal-norm one.
    records = [
        rec("a", "fgsm", "11110110"), rec("b", "pgd", "11011110"),
        rec("c", "pgd", "10000000", eps=0.2), rec("d", "pgd-l2", "00000001", eps=1.0, norm="L2"),
        rec("e", "deepfool", "00000000", eps=None, norm="L2", median_norm=0.5),
        rec("f", "pgd", "11111100", threat="transfer"),
    ]
    df = build_table(records, SPEC)
    worst = [c for c in df.columns if c.startswith("worst")]
    assert worst == ["worst L2 1", "worst Linf 0.1", "worst Linf 0.2"]
    row = df.iloc[0]
    # Linf 0.1: fgsm AND pgd = 11010110 (5/8), AND the transfer pgd = 11010100 -> 4/8; eps 0.2 and L2
    # never enter it.
    assert row["worst Linf 0.1"].startswith("50.0 [")
    assert row["worst Linf 0.2"].startswith("12.5 ") and row["worst L2 1"].startswith("12.5 ")
    # The old AND over everything bounded would have been 0/8.
    assert main_budget(records) == ("Linf", 0.1)


def test_headers_name_their_budget_and_footer_says_n_seed_threat():
    records = [rec("a", "fgsm", "1100"), rec("b", "pgd", "1000", eps=8 / 255),
               rec("c", "pgd", "1110", threat="adaptive"), rec("d", "cw-l2", "0000", eps=None, norm="L2",
                                                              median_norm=0.81234, mean_rho2_success=0.1)]
    df = build_table(records, SPEC)
    cols = list(df.columns)
    assert {"fgsm Linf 0.1", "pgd Linf 8/255", "pgd (adaptive) Linf 0.1", "cw-l2", "cw-l2 med L2",
            "cw-l2 ρ2"} <= set(cols)
    assert df.iloc[0]["cw-l2 med L2"] == "0.812" and df.iloc[0]["cw-l2 ρ2"] == "0.100"
    text = render(records, SPEC)
    assert "n = 4 test examples of `digits`, seed 0; threat models: Linf eps 8/255, 0.1" in text
    assert "unbounded minimal-norm attacks: cw-l2" in text


def test_wilson_interval_equals_reference():
    # Brown, Cai & DasGupta (2001) / textbook values, to 4 decimals.
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    # Independent characterisation: the endpoints solve (p_hat - p)^2 = z^2 p (1 - p) / n.
    z, n, k = 1.959963984540054, 100, 53
    for p in wilson_interval(k, n):
        assert (k / n - p) ** 2 == pytest.approx(z * z * p * (1 - p) / n, rel=1e-9)
    stats = pytest.importorskip("scipy.stats")
    ref = stats.binomtest(53, 100).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(53, 100) == pytest.approx((ref.low, ref.high), abs=1e-12)
    assert interval_of("1" * 53 + "0" * 47) == wilson_interval(53, 100)


def test_mcnemar_equals_exact_binomial():
    a = "1" * 30 + "1" * 8 + "0" * 2 + "0" * 10 + "1" * 50
    b = "1" * 30 + "0" * 8 + "1" * 2 + "0" * 10 + "1" * 50
    only_a, only_b, p = mcnemar(a, b)
    assert (only_a, only_b) == (8, 2)
    stats = pytest.importorskip("scipy.stats")
    assert p == pytest.approx(stats.binomtest(2, 10, 0.5).pvalue, rel=1e-12)
    assert p == pytest.approx(112 / 1024)  # 2 * (1 + 10 + 45) / 2^10
    assert mcnemar("1010", "1010")[2] == 1.0
    with pytest.raises(ValueError):
        mcnemar("10", "101")


def test_paper_number_outside_interval_is_marked():
    spec = grid.parse({"dataset": "digits", "arch": "small-cnn",
                       "attacks": [{"name": "fgsm", "eps": 0.1}, {"name": "pgd", "eps": 0.1}],
                       "reference": {"standard/none/fgsm": 90.0, "standard/none/pgd Linf 0.1": 55.0}}, "g")
    records = [rec("a", "fgsm", "1" * 50 + "0" * 50), rec("b", "pgd", "1" * 50 + "0" * 50)]
    row = build_table(records, spec).iloc[0]
    assert row["fgsm Linf 0.1"] == "50.0 [40–60] (90‡)"  # 90 is far outside [40.4, 59.6]
    assert row["pgd Linf 0.1"] == "50.0 [40–60] (55)"


def test_headline_ranks_by_main_threat_model_with_mcnemar():
    strong = "1" * 80 + "0" * 20
    weak = "1" * 40 + "0" * 60
    close = "1" * 38 + "0" * 62
    records = [rec("a", "pgd", weak), rec("b", "pgd", strong, runtime="deepnn"),
               rec("c", "pgd", close, runtime="median"), rec("d", "pgd", "0" * 100, eps=0.3, runtime="median")]
    df, budget = headline(records, SPEC)
    assert budget == ("Linf", 0.1)
    assert list(df["runtime"]) == ["deepnn", "none", "median"]
    assert df.iloc[0]["vs next row (McNemar)"].startswith("better (p = ")
    assert df.iloc[1]["vs next row (McNemar)"].startswith("not distinguishable")


def test_adaptive_attack_not_stronger_is_flagged():
    same = "1" * 72 + "0" * 28
    records = [rec("base", "pgd", same, runtime="ride"),
               {**rec("eot", "pgd", same, runtime="ride", threat="adaptive"), "attack_name": "eot",
                "randomized": True, "eot_samples": 2},
               rec("mb", "pgd", same, runtime="median"),
               {**rec("bpda", "pgd", "1" * 30 + "0" * 70, runtime="median", threat="adaptive"), "attack_name": "bpda"}]
    flags = cell_flags(records)
    assert list(flags) == ["eot"]
    assert "not stronger than the base attack (72.0% >= 72.0%)" in flags["eot"][0]


def test_pictures_and_index_from_bench_leaderboard_all(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from bench.cli import cli

    spec = grid.load("ci")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    lines = []
    for i, c in enumerate(spec.cells()):
        r = rec(c.cell_id, c.attack_label, ("1" * (50 + i) + "0" * 50)[:100], eps=c.eps, threat=c.threat,
                runtime=c.runtime_defense, train=c.train_defense, norm="L2" if c.eps is None else "Linf",
                code_version="0.1.0+abc", device="cpu", finished_at="2026-11-29T03:00:00Z", key=c.key)
        lines.append(json.dumps(r))
    (tmp_path / "results" / "ci.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "leaderboards").mkdir()
    (tmp_path / "leaderboards" / "old.md").write_text("# old\n\nDataset `x` (7 test examples)\n"
                                                      "Code version 0.0.9; device cuda; seed 0.\n")
    result = CliRunner().invoke(cli, ["leaderboard", "--all"])  # a local board: results/leaderboards/
    assert result.exit_code == 0, result.output
    assert (tmp_path / "results" / "leaderboards" / "ci.md").is_file()
    assert not (tmp_path / "leaderboards" / "ci.md").exists()
    result = CliRunner().invoke(cli, ["leaderboard", "--all", "--publish"])
    assert result.exit_code == 0, result.output
    md = (tmp_path / "leaderboards" / "ci.md").read_text()
    for png in ("clean_vs_robust.png", "robust_vs_eps.png"):
        assert f"](ci/{png})" in md
        assert (tmp_path / "leaderboards" / "ci" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the published records regenerate the same board without rerunning
    published = (tmp_path / "leaderboards" / "ci" / "records.jsonl").read_text().splitlines()
    assert sorted(published) == sorted(json.dumps(json.loads(line), sort_keys=True) for line in lines)
    # ... which --regenerate does: the local results gone, the notes edited, the board rebuilt from them
    (tmp_path / "results" / "ci.jsonl").unlink()
    (tmp_path / "leaderboards" / "ci.notes.md").write_text("## Notes\n\nEdited after the run.\n")
    result = CliRunner().invoke(cli, ["leaderboard", "--grid", "ci", "--regenerate"])
    assert result.exit_code == 0, result.output
    again = (tmp_path / "leaderboards" / "ci.md").read_text()
    assert again.startswith(md) and again.endswith("Edited after the run.\n")
    result = CliRunner().invoke(cli, ["leaderboard", "--grid", "default", "--regenerate"])
    assert result.exit_code != 0 and "no published records of grid default" in str(result.exception)
    index = (tmp_path / "leaderboards" / "README.md").read_text()
    assert "| [ci](ci.md) ([records](ci/records.jsonl)) | `ci` | 2026-11-29 | 0.1.0+abc | 100 | cpu |" in index
    assert "| [old](old.md) (older format: no intervals or per-budget worst case) | `old` | - | 0.0.9 | 7 | cuda |" \
        in index


def test_interval_fields_in_records():
    from bench.run.evaluation import _interval_fields

    fields = _interval_fields({"n": 100, "clean_acc": 0.97, "per_example": "1" * 53 + "0" * 47})
    assert fields["robust_ci"] == [round(v, 6) for v in wilson_interval(53, 100)]
    assert fields["clean_ci"] == [round(v, 6) for v in wilson_interval(97, 100)]
    assert all(not math.isnan(v) for v in fields["clean_ci"])


def test_minimal_norm_threshold_column_from_the_grid():
    spec = grid.parse({"dataset": "digits", "arch": "small-cnn",
                       "attacks": [{"name": "cw-l2", "threshold": 1.5}]}, "g")
    r = rec("a", "cw-l2", "0010", eps=None, norm="L2", per_example_norm=[0.5, 2.0, 0.1, 1.5], median_norm=1.5)
    row = build_table([r], spec).iloc[0]
    # Flipped at 0.5 and 1.5 (within 1.5), at 2.0 (too large: robust), example 3 was never flipped.
    assert row["cw-l2 L2 ≤ 1.5"].startswith("50.0 [")
    assert row["cw-l2"].startswith("25.0 [") and row["cw-l2 med L2"] == "1.500"
    with pytest.raises(Exception, match="threshold"):
        grid.parse({"dataset": "digits", "arch": "small-cnn", "attacks": [{"name": "cw-l2", "threshold": -1}]}, "g")


@pytest.mark.slow
def test_leaderboard_files_become_mlflow_artifacts(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)  # the sqlite store keeps artifacts in ./mlruns
    import mlflow

    from bench.track.tracker import log_leaderboard

    md, png = tmp_path / "g.md", tmp_path / "worst_case.png"
    md.write_text("# Leaderboard: g\n")
    png.write_bytes(b"\x89PNG\r\n\x1a\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    log_leaderboard("g", [md, png], uri)
    client = mlflow.tracking.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("advbench/g").experiment_id], "tags.kind = 'leaderboard'")
    assert len(runs) == 1
    names = {a.path for a in client.list_artifacts(runs[0].info.run_id, "leaderboard")}
    assert names == {"leaderboard/g.md", "leaderboard/worst_case.png"}


def test_cells_pin_their_thread_count(monkeypatch):
    import torch

    from bench.core.errors import BenchError
    from bench.run.runner import fix_threads

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.delenv("BENCH_NUM_THREADS", raising=False)
        assert fix_threads() == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("BENCH_NUM_THREADS", "zero")
        with pytest.raises(BenchError, match="BENCH_NUM_THREADS"):
            fix_threads()
    finally:
        torch.set_num_threads(before)


def test_knn_ties_are_broken_by_row_id():
    pytest.importorskip("faiss")
    import torch

    from defenses.knn_index import KnnIndex

    # Rows 1, 3, 4 and 6 are all at distance 1 from the query; the two nearest after row 5 (distance 0)
    # must be the lowest ids, 1 and 3, whatever order faiss's heap leaves them in.
    db = torch.tensor([[5.0], [1.0], [9.0], [1.0], [-1.0], [0.0], [1.0]])
    dist, idx = KnnIndex(db, use_gpu=False).search(torch.tensor([[0.0]]), 3)
    assert idx.tolist() == [[5, 1, 3]] and dist.tolist() == [[0.0, 1.0, 1.0]]


def test_regenerate_a_checkpoint_grid_without_its_weights(tmp_path, monkeypatch):
    """A published board of a grid whose checkpoint lives under $BENCH_WEIGHTS_DIR re-renders from its
    records with the variable unset (its cell ids fingerprint the file; the records need no weights)."""
    import shutil

    from bench.cli import cli

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.delenv("BENCH_WEIGHTS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "leaderboards").mkdir()
    shutil.copytree(repo / "leaderboards" / "cifar10-pretrained", tmp_path / "leaderboards" / "cifar10-pretrained")
    result = CliRunner().invoke(cli, ["leaderboard", "--grid", "cifar10-pretrained", "--regenerate"])
    assert result.exit_code == 0, result.output
    md = (tmp_path / "leaderboards" / "cifar10-pretrained.md").read_text()
    assert "| standard | none |" in md and "## Headline" in md
    result = CliRunner().invoke(cli, ["leaderboard", "--grid", "cifar10-pretrained", "--regenerate", "--limit", "5"])
    assert result.exit_code != 0 and "BENCH_WEIGHTS_DIR" in str(result.exception)  # a subset needs the ids
