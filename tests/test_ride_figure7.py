"""RIDE's Figure 7 (Lin, Pfister, Zhang): after BPDA, the distances defend2adv, adv2gt and
defense2gt per purifier and the classifier's accuracy on x_adv with and without the defense
(``metrics = ["purifier-distances"]``, figure kind ``purifier-analysis``, grid ride-figure7-mnist)."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest
import torch
from torch import nn

from bench.core.errors import BenchError
from bench.spec import grid
from bench.spec.purifier_fields import ADV_ACC, DISTANCES, per_example_field

TINY_GRID = """
name = "tiny-fig7"
dataset = "digits"
arch = "small-cnn"
limit = 12
seed = 0
metrics = ["purifier-distances"]
[train.standard]
epochs = 5
[runtime.median]
k = 3
[runtime.ride]
iterations = 2
checkpoints = 1
est_samples = 2
[[attacks]]
name = "pgd"
eps = 0.1
params = { steps = 2 }
runtime = ["none", "median"]
[[attacks]]
name = "bpda"
label = "bpda"
threat = "adaptive"
eps = 0.1
params = { steps = 5, step_size = 0.02 }
runtime = ["median", "ride"]
[[figures]]
name = "fig7a"
kind = "purifier-analysis"
[[figures]]
name = "fig7b"
kind = "purifier-analysis"
metric = "accuracy"
"""


def _l2(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Per-image Euclidean distance, by hand in numpy (float64)."""
    d = a.double().numpy().reshape(len(a), -1) - b.double().numpy().reshape(len(b), -1)
    return np.sqrt((d * d).sum(axis=1))


def _median3(img: np.ndarray) -> np.ndarray:
    """A 3x3 median filter with zero padding, one pixel at a time (C, H, W)."""
    c, h, w = img.shape
    pad = np.pad(img, ((0, 0), (1, 1), (1, 1)))
    return np.array([[[np.median(pad[ch, i : i + 3, j : j + 3]) for j in range(w)] for i in range(h)]
                     for ch in range(c)])


def test_distances_equal_a_hand_computation(digits_test):
    import defenses
    from bench.run import purifier_distances as pdist

    x, y = digits_test.x[:4], digits_test.y[:4]
    sign = torch.where(torch.arange(x[0].numel()).view_as(x[0]) % 3 == 0, 1.0, -1.0)
    x_adv = (x + 0.1 * sign).clamp(0, 1)  # a fixed "adversarial" image per digit
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(x[0].numel(), 10)).eval()
    median = defenses.create("median", k=3).prepare(model)
    with pdist.recording(median) as seen:
        scored = median.logits(x_adv).argmax(1)
    assert "transform" not in vars(median)  # the defense is as it was
    rec = pdist.fields(model, median, x, x_adv, y, seen)

    purified = torch.from_numpy(np.stack([_median3(im) for im in x_adv.double().numpy()])).float()
    want = {"defend2adv": _l2(purified, x_adv), "adv2gt": _l2(x_adv, x), "defense2gt": _l2(purified, x)}
    for name in DISTANCES:
        assert rec[per_example_field(name)] == pytest.approx(want[name].tolist(), abs=1e-4), name
        assert [rec[f"{name}_q1"], rec[f"{name}_median"], rec[f"{name}_q3"]] == pytest.approx(
            np.percentile(want[name], [25, 50, 75]).tolist(), abs=1e-4), name
    with torch.no_grad():
        assert rec[ADV_ACC] == pytest.approx(float((model(x_adv).argmax(1) == y).float().mean()))
    assert rec["distance_norm"] == "L2" and min(want["adv2gt"]) > 0
    # the recorded purification is the one the scored prediction used
    with torch.no_grad():
        assert torch.equal(model(torch.cat(seen)).argmax(1), scored)
    # without a recording: one extra pass gives the same fields
    assert pdist.fields(model, median, x, x_adv, y, []) == rec


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from bench.run.runner import Runner, RunOptions

    tmp = tmp_path_factory.mktemp("fig7")
    spec = grid.parse(tomllib.loads(TINY_GRID), path=str(tmp / "tiny-fig7.toml"))
    runner = Runner(spec, RunOptions(cache_dir=tmp / "cache", results_dir=tmp / "results", tracking=False,
                                     progress=False, log_samples=False, device="cpu"))
    summary = runner.run()
    assert summary.failed == 0, summary.failures
    return runner, list(runner.store.records.values())


def _by_row(records: list[dict]) -> dict[tuple[str, str], dict]:
    return {(r["runtime_defense"], r["attack"]): r for r in records}


@pytest.mark.slow
def test_a_tiny_bpda_cell_records_the_distances(tiny_run):
    from bench.core.contracts import batched_logits
    from defenses.median import median_filter

    runner, records = tiny_run
    recs = _by_row(records)
    assert len(records) == 4
    for key in (("median", "bpda"), ("ride", "bpda")):
        r = recs[key]
        d = {name: np.array(r[per_example_field(name)]) for name in DISTANCES}
        assert all(len(v) == r["n"] == 12 for v in d.values())
        assert (d["defend2adv"] <= d["adv2gt"] + d["defense2gt"] + 1e-4).all(), key  # triangle inequality
        assert d["defend2adv"].sum() > 0 and d["adv2gt"].sum() > 0, key
        assert 0 <= r[ADV_ACC] <= 1
    for key in (("none", "pgd"), ("median", "pgd")):  # not BPDA: the metric does not apply
        assert per_example_field("defend2adv") not in recs[key] and ADV_ACC not in recs[key]

    # The median cell's numbers, from its own x_adv by hand; the classifier's accuracy on x_adv too.
    cell = next(c for c in runner.cells if (c.runtime_defense, c.attack_label) == ("median", "bpda"))
    x_adv = runner.artifacts.adv_in_memory(runner.artifacts.adv_key(cell))[0]
    x, y = runner.test.x[:12], runner.test.y[:12]
    r = recs[("median", "bpda")]
    assert r[per_example_field("defend2adv")] == pytest.approx(_l2(median_filter(x_adv, 3), x_adv), abs=1e-4)
    assert r[per_example_field("adv2gt")] == pytest.approx(_l2(x_adv, x), abs=1e-4)
    model = runner.artifacts.model(cell.arch, cell.train_defense, cell.train_params, cell.seed)[0]
    assert r[ADV_ACC] == pytest.approx(float((batched_logits(model, x_adv).argmax(1) == y).float().mean()))

    # RIDE is random: the distances belong to the draw that was scored (a reset replays it).
    cell = next(c for c in runner.cells if c.runtime_defense == "ride")
    model, key = runner.artifacts.model(cell.arch, cell.train_defense, cell.train_params, cell.seed)
    ride = runner.artifacts.runtime(cell, model, key)
    x_adv = runner.artifacts.adv_in_memory(runner.artifacts.adv_key(cell))[0]
    ride.reset()
    purified = ride.transform(x_adv)
    r = recs[("ride", "bpda")]
    assert r[per_example_field("defense2gt")] == pytest.approx(_l2(purified, x), abs=1e-4)
    with torch.no_grad():
        scored = model(purified).argmax(1) == y
    assert r["per_example"] == "".join("1" if v else "0" for v in scored.tolist())


@pytest.mark.slow
def test_figure_series_equal_the_records_and_draw(tiny_run, tmp_path):
    from bench.report import purifier_figure
    from bench.report.grid_figures import figure_series, write_grid_figures

    runner, records = tiny_run
    spec = runner.spec
    recs = _by_row(records)
    boxes = figure_series(records, spec.figures[0])
    assert [s["label"] for s in boxes] == ["median", "ride"]  # the pgd cells carry no distances
    for s in boxes:
        assert s["x"] == list(DISTANCES)
        assert s["y"] == [recs[(s["label"], "bpda")][per_example_field(d)] for d in DISTANCES]
    adv, defended = figure_series(records, spec.figures[1])
    assert adv["label"] == purifier_figure.ADVERSARIAL and defended["label"] == purifier_figure.DEFENDED
    assert adv["x"] == defended["x"] == ["median", "ride"]
    assert adv["y"] == pytest.approx([100 * recs[(k, "bpda")][ADV_ACC] for k in adv["x"]])
    assert defended["y"] == pytest.approx([100 * recs[(k, "bpda")]["robust_acc"] for k in adv["x"]])
    assert adv["n"] == [12, 12]
    drawn = write_grid_figures(spec, records, tmp_path)
    assert [(f["name"], p is not None and p.stat().st_size > 0) for f, p, _ in drawn] == [("fig7a", True),
                                                                                          ("fig7b", True)]


def test_series_labels_tell_records_apart_and_skip_records_without_the_fields():
    from bench.report.grid_figures import figure_series

    def rec(runtime: str, seed: int, with_fields: bool = True) -> dict:
        r = {"status": "ok", "train_defense": "standard", "runtime_defense": runtime, "attack": "bpda",
             "threat": "adaptive", "eps": 0.1, "seed": seed, "n": 2, "robust_acc": 0.5}
        if with_fields:
            r |= {per_example_field(d): [float(i + seed), 1.0] for i, d in enumerate(DISTANCES)} | {ADV_ACC: 0.0}
        return r

    records = [rec("ride", 0), rec("ride", 1), rec("tvm", 0, with_fields=False)]
    fig = {"kind": "purifier-analysis", "metric": "distances", "rows": [], "attacks": []}
    series = figure_series(records, fig)
    assert [s["label"] for s in series] == ["ride (seed 0)", "ride (seed 1)"]
    assert series[1]["y"][2] == [3.0, 1.0]
    assert figure_series([records[2]], {**fig, "metric": "accuracy"}) == []


def test_the_grid_loads_as_the_paper_sets_it_up():
    from bench.spec.validate import check_spec

    spec = grid.load("ride-figure7-mnist")
    check_spec(spec)  # every hyperparameter fits its method
    assert spec.metrics == ("purifier-distances",) and spec.dataset == "mnist"
    assert {(c.runtime_defense, c.attack, c.threat, c.eps) for c in spec.cells()} == {
        (r, "bpda", "adaptive", 0.1) for r in ("ride", "median", "tvm")}
    (bpda,) = spec.attacks
    assert bpda.params == {"steps": 10, "step_size": 0.02}  # the paper's MNIST BPDA (10 PGD iterations)
    assert spec.runtime["ride"]["network"] == "table3"
    assert [(f["kind"], f["metric"]) for f in spec.figures] == [("purifier-analysis", "distances"),
                                                                ("purifier-analysis", "accuracy")]
    assert spec.reference == {"standard/ride/bpda (adaptive)": 98.0}


def _one_line(raw: dict) -> str:
    with pytest.raises(BenchError) as exc:
        grid.parse(raw, path="g.toml")
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_bad_use_is_one_clear_line():
    raw = tomllib.loads(TINY_GRID)
    no_bpda = {**raw, "attacks": raw["attacks"][:1]}
    assert "applies to BPDA cells only" in _one_line(no_bpda)
    base_bpda = {**raw, "attacks": [{**raw["attacks"][1], "threat": "base"}]}
    assert "threat = \"adaptive\"" in _one_line(base_bpda)
    no_metric = {k: v for k, v in raw.items() if k != "metrics"}
    assert "add that line" in _one_line(no_metric) and "fig7a" in _one_line(no_metric)
    bad_metric = {**raw, "figures": [{"kind": "purifier-analysis", "metric": "robust_acc"}]}
    assert "must be one of distances, accuracy" in _one_line(bad_metric)
    assert "metrics must be a list drawn from deep-defense, purifier-distances" in _one_line(
        {**raw, "metrics": ["purifier-distance"]})
