"""bench estimate: every cell predicted, from timed smoke pieces and stated factors."""

from __future__ import annotations

import pytest

from bench.run.estimate import compare_report, estimate, format_report, step_timer, work_ratio
from bench.run.runner import RunOptions
from bench.spec import grid as grids
from bench.spec.smoke import ATTACK_CAPS
from tests.test_extension_api import run_cli

GRID = """
name = "est"
dataset = "digits"
arch = "small-cnn"
limit = 64
[train.standard]
epochs = 8
[runtime.none]
[runtime.deepnn]
[[attacks]]
name = "pgd"
eps = 0.1
params = { steps = 20 }
[[attacks]]
name = "fgsm"
eps = 0.1
"""


def test_work_ratio_is_the_product_of_budget_ratios():
    r, how = work_ratio({"steps": 20, "restarts": 3}, {"steps": 2, "restarts": 1}, {}, ATTACK_CAPS)
    assert r == pytest.approx(30.0) and "steps 20/2" in how and "restarts 3/1" in how
    import attacks

    assert work_ratio({"steps": 20}, {"steps": 2}, {}, ATTACK_CAPS, factory=attacks.ATTACKS.get("fgsm"))[0] == 1.0


def test_k_scales_rmc_by_an_epochs_steps_timed_at_their_real_batch_sizes():
    """K = 300 in batches of 128 is two full steps and one of 44; the smoke's K = 8 one step of 8."""
    import torch

    from bench.spec.smoke import RUNTIME_CAPS

    cost = {128: 1.0, 44: 0.5, 8: 0.25}.__getitem__
    dflt = {"k": 1024, "batch_size": 128, "max_epochs": 8}
    r, how = work_ratio({"k": 300}, {"k": 8, "max_epochs": 2}, dflt, RUNTIME_CAPS, step_cost=cost)
    assert r == pytest.approx((2 * 1.0 + 0.5) / 0.25 * 8 / 2) and "k 300/8" in how and "max_epochs 8/2" in how
    assert work_ratio({"k": 300}, {"k": 8}, {"k": 1024}, RUNTIME_CAPS, step_cost=cost)[0] == 1.0  # a search
    timer = step_timer(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)), (1, 8, 8), 10,
                       torch.device("cpu"))
    assert 0 < timer(4) and timer(4) == timer(4)  # measured once, memoised


@pytest.mark.slow
def test_estimate_lists_every_cell_with_scaled_pieces(tmp_path, capsys):
    (tmp_path / "est.toml").write_text(GRID)
    spec = grids.load(str(tmp_path / "est.toml"))
    rep = estimate(spec, RunOptions(cache_dir=tmp_path / "c", results_dir=tmp_path / "r", tracking=False,
                                    device="cpu", progress=False, log_samples=False), workers=2)
    assert list(rep["per_cell"]) == [c.key for c in spec.cells()]
    assert all(v > 0 for v in rep["per_cell"].values())
    train = next(p for p in rep["pieces"] if p.label == "train standard")
    assert train.factor == pytest.approx(1297 / 512 * 8)  # images x epochs; plain training has no steps
    pgd = next(p for p in rep["pieces"] if p.label.startswith("craft pgd"))
    assert pgd.factor == pytest.approx(64 / 16 * 20 / 2) and "steps 20/2" in pgd.how
    assert rep["total_s"] == pytest.approx(sum(p.predicted_s for p in rep["pieces"]))
    assert rep["total_workers_s"] >= rep["total_s"] / 2
    text = format_report(rep)
    assert all(key in text for key in rep["per_cell"]) and "total:" in text
    rows = {"/".join(k.split("/")[:2]) for k in rep["per_cell"]}
    assert all(f"| {r} | " in text for r in rows) and "| train | " in text and "| craft | " in text
    code, out, err = run_cli("estimate", "--grid", str(tmp_path / "est.toml"), "--device", "cpu", capsys=capsys)
    assert code == 0 and all(key in out for key in rep["per_cell"]), err


TINY = """
name = "est-tiny"
dataset = "digits"
arch = "small-cnn"
limit = 8
train_limit = 64
[train.standard]
epochs = 1
[runtime.none]
[[attacks]]
name = "fgsm"
eps = 0.1
"""


def _tiny(tmp_path):
    (tmp_path / "tiny.toml").write_text(TINY)
    return grids.load(str(tmp_path / "tiny.toml")), RunOptions(
        cache_dir=tmp_path / "c", results_dir=tmp_path / "r", tracking=False, device="cpu", progress=False,
        log_samples=False)


def test_estimate_times_crafting_and_prediction(tmp_path):
    spec, options = _tiny(tmp_path)
    rep = estimate(spec, options)
    kinds = {p.label.split()[0] for p in rep["pieces"]}
    assert {"craft", "predict"} <= kinds, kinds  # a smoke cell that fails would time neither
    assert all(v > 0 for v in rep["per_cell"].values())


def test_an_untrained_model_is_estimated_without_dividing_by_its_zero_epochs(tmp_path):
    """Wiring-check grids (imagenet-rmc) train for 0 epochs; the estimate crashed on 0 / 0."""
    _, options = _tiny(tmp_path)
    (tmp_path / "zero.toml").write_text(TINY.replace("epochs = 1", "epochs = 0"))
    rep = estimate(grids.load(str(tmp_path / "zero.toml")), options)
    train = next(p for p in rep["pieces"] if p.label == "train standard")
    assert "epochs 0/0" in train.how and 0 < train.factor < float("inf")


def test_estimate_refuses_when_smoke_cells_fail(tmp_path, monkeypatch):
    from bench.core.errors import BenchError
    from bench.run.evaluation import Evaluator

    def broken(self, cell):
        raise RuntimeError("boom")

    monkeypatch.setattr(Evaluator, "evaluate", broken)
    spec, options = _tiny(tmp_path)
    with pytest.raises(BenchError, match="1 of 1 smoke cells of est-tiny failed.*boom"):
        estimate(spec, options)


COLLAPSING = TINY.replace('name = "fgsm"\neps = 0.1', '''name = "pgd"
label = "pgd s20"
eps = 0.1
params = { steps = 20 }
[[attacks]]
name = "pgd"
label = "pgd s40"
eps = 0.1
params = { steps = 40 }''')


def test_cells_the_smoke_caps_make_one_are_each_predicted_at_their_own_budget(tmp_path):
    """pgd with 20 and 40 steps both shrink to the same 2-step smoke cell, which runs once: each full cell
    still gets its own craft piece, the second twice the first (it was 0 s before)."""
    (tmp_path / "c.toml").write_text(COLLAPSING)
    spec = grids.load(str(tmp_path / "c.toml"))
    _, options = _tiny(tmp_path)
    rep = estimate(spec, options)
    crafts = {p.label: p for p in rep["pieces"] if p.kind == "craft"}
    s20 = next(p for label, p in crafts.items() if "pgd s20" in label)
    s40 = next(p for label, p in crafts.items() if "pgd s40" in label)
    assert s40.measured_s == s20.measured_s and s40.predicted_s == pytest.approx(2 * s20.predicted_s)
    assert all(v > 0 for v in rep["per_cell"].values()), rep["per_cell"]


def test_compare_report_puts_each_prediction_beside_its_measured_cell():
    rep = {"per_cell": {"a": 10.0, "b": 30.0, "c": 5.0}}
    records = [{"key": "a", "status": "ok", "seconds": 20.0, "cpu_seconds": 16.0, "num_threads": 2},
               {"key": "b", "status": "ok", "seconds": 20.0},
               {"key": "c", "status": "failed", "seconds": 1.0}, {"key": "z", "status": "ok", "seconds": 99.0}]
    text = compare_report(rep, records)
    assert "| a | 10.0 s | 20.0 s | 8.0 s | 0.50 |" in text and "| b | 30.0 s | 20.0 s | - | 1.50 |" in text
    assert "CPU time / threads of the 1 cells that record it: 8.0 s" in text
    assert "| c |" not in text and "| z |" not in text  # failed and foreign records are not compared
    assert "compared 2 cells (1 without a measured record)" in text and "ratio 1.00" in text
    assert "nothing to compare" in compare_report(rep, [])
