"""The grid runner end to end on a tiny digits grid: records, MLflow, resume, audit, check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import attacks
from bench.core.contracts import Attack
from bench.core.errors import BenchError
from bench.report.check import compare, write_baseline
from bench.report.leaderboard import build_table, render, worst_case
from bench.run.runner import Runner, RunOptions
from bench.spec import grid

TINY = """
name = "tiny"
dataset = "digits"
arch = "small-cnn"
limit = 60
seed = 0
[train.standard]
epochs = 8
[runtime.none]
[[attacks]]
name = "fgsm"
eps = 0.2
[[attacks]]
name = "pgd"
eps = [0.1, 0.3]
[[attacks]]
name = "not-an-attack-yet"
eps = 0.1
optional = true
"""


def _spec(tmp_path: Path, text: str = TINY) -> grid.GridSpec:
    path = tmp_path / "tiny.toml"
    path.write_text(text)
    return grid.load(str(path))


def _opts(tmp_path: Path, **kw) -> RunOptions:
    return RunOptions(cache_dir=tmp_path / "cache", results_dir=tmp_path / "results",
                      tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", progress=False, **kw)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grid")
    spec = _spec(tmp)
    summary = Runner(spec, _opts(tmp)).run()
    return tmp, spec, summary


def test_grid_runs_and_records_every_cell(finished):
    tmp, spec, summary = finished
    assert summary.ran == 3 and summary.failed == 0 and summary.skipped_unavailable == 1
    lines = (tmp / "results" / "tiny.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 3
    fields = {"grid", "dataset", "arch", "train_defense", "runtime_defense", "attack", "threat", "norm", "eps", "n",
              "clean_acc", "robust_acc", "attack_success_rate", "max_perturbation", "mean_l2", "seconds",
              "cpu_seconds", "examples_per_second", "device", "device_name", "seed", "code_version", "config_hash",
              "status", "error"}
    for r in records:
        assert fields <= set(r), fields - set(r)
        assert r["status"] == "ok" and r["n"] == 60 and len(r["per_example"]) == 60
        assert r["max_perturbation"] <= r["eps"] + 1e-6
        assert r["robust_acc"] < r["clean_acc"]
        assert 0 < r["cpu_seconds"] and 0 < r["seconds"]
    by_eps = {r["eps"]: r["robust_acc"] for r in records if r["attack"] == "pgd"}
    assert by_eps[0.3] < 0.05 and by_eps[0.3] <= by_eps[0.1]


def test_mlflow_has_one_nested_run_per_cell(finished):
    import mlflow

    tmp, spec, _ = finished
    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    exp = client.get_experiment_by_name("advbench/tiny")
    runs = client.search_runs([exp.experiment_id])
    cells = [r for r in runs if "cell_id" in r.data.tags]
    assert len(cells) == 3
    assert all("mlflow.parentRunId" in r.data.tags for r in cells)
    assert all("robust_acc" in r.data.metrics and r.data.params["dataset"] == "digits" for r in cells)
    assert {r.data.tags["torch_version"] for r in cells} == {torch.__version__}
    arts = client.list_artifacts(cells[0].info.run_id)
    assert any(a.path.endswith(".png") for a in arts)


def test_second_run_skips_finished_cells(finished, monkeypatch):
    tmp, spec, _ = finished
    before = (tmp / "results" / "tiny.jsonl").read_text()
    runner = Runner(spec, _opts(tmp, tracking=False))
    monkeypatch.setattr(runner, "run_cell", lambda cell: pytest.fail(f"re-ran finished cell {cell.key}"))
    summary = runner.run()
    assert summary.ran == 0 and summary.skipped_done == 3
    assert (tmp / "results" / "tiny.jsonl").read_text() == before


def test_check_passes_on_itself_and_fails_on_doctored_result(finished):
    tmp, spec, _ = finished
    path = tmp / "results" / "tiny.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    write_baseline(records, tmp / "baseline.json")
    assert compare(records, tmp / "baseline.json", 1.0) == []
    doctored = [dict(r) for r in records]
    doctored[0]["robust_acc"] += 0.2
    problems = compare(doctored, tmp / "baseline.json", 5.0)
    assert len(problems) == 1 and "robust_acc" in problems[0]
    doctored[1]["status"] = "failed"
    assert any("failed" in p for p in compare(doctored, tmp / "baseline.json", 5.0))


def test_leaderboard_table_and_worst_case(finished):
    tmp, spec, _ = finished
    records = [json.loads(line) for line in (tmp / "results" / "tiny.jsonl").read_text().splitlines()]
    table = build_table(records, spec)
    assert list(table.columns) == ["train-time", "runtime", "clean", "fgsm Linf 0.2", "pgd Linf 0.1", "pgd Linf 0.3",
                                   "worst Linf 0.1", "worst Linf 0.2", "worst Linf 0.3"]
    assert len(table) == 1
    # the board names the hardware (a CPU's model name from /proc/cpuinfo), not just "cpu"
    from bench.core.device import cpu_name
    from bench.report.board import board
    assert board(records, spec)["devices"] == [f"cpu ({cpu_name()})"]
    assert cpu_name() in render(records, spec)
    assert worst_case(["1101", "1011", "1110"]) == 0.25
    assert worst_case([]) is None


class _Broken(Attack):
    """Steps outside the ball on purpose."""

    def perturb(self, model, x, y, target, gen):
        return (x + 2 * self.eps).clamp(0, 1)


def test_audit_fails_a_broken_attack_loudly_and_the_grid_goes_on(tmp_path):
    attacks.ATTACKS.register("test-broken")(_Broken)
    try:
        spec = _spec(tmp_path, TINY.replace("not-an-attack-yet", "test-broken"))
        summary = Runner(spec, _opts(tmp_path, tracking=False)).run()
    finally:
        attacks.ATTACKS._entries.pop("test-broken")
    assert summary.failed == 1 and summary.ran == 4
    records = [json.loads(line) for line in (tmp_path / "results" / "tiny.jsonl").read_text().splitlines()]
    broken = [r for r in records if r["attack"] == "test-broken"]
    assert broken[0]["status"] == "failed" and broken[0]["error"].startswith("audit:")
    assert sum(r["status"] == "ok" for r in records) == 3


def test_grid_spec_validation(tmp_path):
    bad = {
        "malformed": "name = [",
        "eps": TINY.replace("eps = 0.2", "eps = 1.5"),
        "negative": TINY.replace("eps = 0.2", "eps = -0.1"),
        "threat": TINY.replace('name = "fgsm"', 'name = "fgsm"\nthreat = "greybox"'),
        "key": TINY + "\nfoo = 1\n",
        "transfer": TINY.replace('name = "fgsm"', 'name = "fgsm"\nthreat = "transfer"'),
    }
    for what, text in bad.items():
        with pytest.raises(BenchError) as err:
            _spec(tmp_path, text)
        assert "\n" not in str(err.value), what


def test_eps_range_follows_a_wrappers_inner_attack(tmp_path):
    """An L2 ball may exceed 1: eot / bpda around pgd-l2 take eps 1.5; around Linf pgd they do not."""
    eot = TINY.replace('name = "fgsm"\neps = 0.2', 'name = "eot"\nthreat = "adaptive"\neps = 1.5\n'
                       'params = { attack = "ATTACK", n = 2 }')
    assert "eot" in eot and "eps = 1.5" in eot
    assert _spec(tmp_path, eot.replace("ATTACK", "pgd-l2")).attacks[0].eps == (1.5,)
    with pytest.raises(BenchError, match="eps 1.5 is outside"):
        _spec(tmp_path, eot.replace("ATTACK", "pgd"))
    bpda = eot.replace('"eot"', '"bpda"').replace(", n = 2", "")
    assert _spec(tmp_path, bpda.replace("ATTACK", "pgd-l2")).attacks[0].eps == (1.5,)


def test_zero_cells_and_unwritable_results(tmp_path):
    empty = _spec(tmp_path, TINY.split("[[attacks]]")[0])
    with pytest.raises(BenchError, match="no cells"):
        Runner(empty, _opts(tmp_path, tracking=False)).run()
    blocker = tmp_path / "file"
    blocker.write_text("")
    opts = _opts(tmp_path, tracking=False)
    opts.results_dir = blocker / "results"
    with pytest.raises(BenchError, match="not writable"):
        Runner(_spec(tmp_path), opts).run()


RUNTIME_LIMIT = """
name = "rl"
dataset = "digits"
arch = "small-cnn"
limit = 30
seed = 0
[train.standard]
epochs = 4
[runtime.none]
[runtime.median]
limit = 12
[[attacks]]
name = "fgsm"
eps = 0.2
"""


@pytest.mark.slow
def test_a_runtime_defense_with_its_own_limit_evaluates_a_prefix_of_the_points(tmp_path):
    """``[runtime.median] limit = 12``: the median cells score the first 12 of the grid's 30 points,
    the same points as the first 12 of the other rows (RMC on CIFAR-10 costs seconds per point)."""
    from bench.report.leaderboard import render

    spec = _spec(tmp_path, RUNTIME_LIMIT)
    assert spec.runtime["median"] == {} and spec.runtime_limits == {"median": 12}  # not a defense parameter
    assert {c.runtime_defense: c.limit for c in spec.cells()} == {"none": 30, "median": 12}
    assert {c.limit for c in spec.cells(limit=5)} == {5}  # --limit below the runtime's own: the smaller
    Runner(spec, _opts(tmp_path, tracking=False)).run()
    lines = (tmp_path / "results" / "rl.jsonl").read_text().splitlines()
    recs = {r["runtime_defense"]: r for r in map(json.loads, lines)}
    assert recs["none"]["n"] == 30 and recs["median"]["n"] == 12
    assert len(recs["median"]["per_example"]) == 12 and len(recs["none"]["per_example"]) == 30
    # the prefix: median's 3x3 filter changes digits predictions, so its clean outcomes differ from
    # none's on some of the 12 points, but its adversarial examples are of the same first 12 images
    assert recs["median"]["clean_per_example"] != recs["none"]["clean_per_example"][:12]
    text = render(list(recs.values()), spec)
    assert "(30 test examples; fewer for the rows of median (12)" in text
    assert "first 12 examples" in text  # the two rows paired on the points both saw
    with pytest.raises(BenchError, match=r"\[runtime.median\] limit must be a positive integer"):
        _spec(tmp_path, RUNTIME_LIMIT.replace("limit = 12", "limit = 0"))
