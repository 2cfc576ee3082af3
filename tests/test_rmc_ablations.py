"""RMC paper Table 7's two ablations (non-masking RMC, hindsight adversarial training on labelled U),
per-point stream records and ``base@variant`` defense names, on digits (CPU, real data)."""

from __future__ import annotations

import pytest
import torch

import attacks
import defenses
from bench.core import stream_records as perpoint
from bench.core.errors import BenchError
from bench.core.stream import stream_order
from bench.run.runner import resolve_params, unavailable_reason

SEED = 0


def _make(name: str, model, train_set, cache_dir, **over):
    factory = defenses.DEFENSES.get(name)
    params = resolve_params(factory, "digits", over, seed=SEED, cache_dir=str(cache_dir))
    return factory(**params).prepare(model, train_set)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("ablation-cache")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _stream(defense, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    defense.reset()
    if y is not None:
        defense.reveal(y)
    return defense.predict(x)


@pytest.mark.slow
def test_nonmasking_prediction_uses_weights_adapted_to_earlier_points_only(digits_model, digits_train,
                                                                           digits_test, cache):
    """Point i's logits are the weights-after-point-(i-1) applied to x_i: replacing x_i changes
    nothing but the input (same weights), while masking RMC's weights do depend on x_i."""
    x, i = digits_test.x[:6], 4
    nm = _make("rmc-nonmasking", digits_model, digits_train, cache, lr=2.5e-3, max_epochs=3)
    nm.reset()
    nm.predict(x[:i])
    with torch.no_grad():
        before = nm.adapted(x[i : i + 1]).clone()
        other = digits_test.x[100:101]
        before_other = nm.adapted(other).clone()
    state = nm.snapshot()
    got = nm.predict(x[i : i + 1])
    assert torch.allclose(got, before, atol=1e-6)
    nm.restore(state)
    got_other = nm.predict(other)  # x_i swapped for another image: the same weights classify it
    assert torch.allclose(got_other, before_other, atol=1e-6)
    # earlier points' predictions do not depend on x_i either
    a = _stream(nm, x)
    x2 = x.clone()
    x2[i] = other[0]
    b = _stream(nm, x2)
    assert torch.equal(a[:i], b[:i])

    rmc = _make("rmc", digits_model, digits_train, cache, lr=2.5e-3, max_epochs=3)
    rmc.reset()
    rmc.predict(x[:i])
    with torch.no_grad():
        masked_before = rmc.adapted(x[i : i + 1]).clone()
    assert not torch.allclose(rmc.predict(x[i : i + 1]), masked_before, atol=1e-4)  # RMC adapts first


def test_hindsight_uses_only_points_before_i(digits_model, digits_train, digits_test, cache):
    """Changing the labels (and images) of points i.. leaves predictions 0..i unchanged, and does
    change a later one: the labels are used, but only in hindsight."""
    hs = _make("hindsight-adv", digits_model, digits_train, cache, lr=5e-3, steps=2, batch_size=16)
    x, y, i = digits_test.x[:12], digits_test.y[:12], 6
    a = _stream(hs, x, y)
    assert hs._generated > 0
    y2, x2 = y.clone(), x.clone()
    y2[i:] = (y2[i:] + 1) % 10
    x2[i] = digits_test.x[200]
    b = _stream(hs, x2, y2)
    assert torch.equal(a[:i], b[:i])  # points before i: the same weights, the same logits
    with torch.no_grad():
        assert not torch.equal(a[i + 1 :], b[i + 1 :])  # later points: wrong labels were learned


def test_hindsight_budget_state_and_missing_labels(digits_model, digits_train, digits_test, cache):
    hs = _make("hindsight-adv", digits_model, digits_train, cache, budget=5, batch_size=4)
    x, y = digits_test.x[:6], digits_test.y[:6]
    first = _stream(hs, x, y)
    assert hs._generated == 5  # stops once the budget of adversarial examples is spent
    assert torch.equal(_stream(hs, x, y), first)  # reset replays the stream exactly
    hs.reset()
    with pytest.raises(BenchError, match="reveal"):
        hs.predict(x[:1])


@pytest.mark.slow
def test_pgd_skip_attacks_the_weights_that_classify_the_point(digits_model, digits_train, digits_test, cache):
    """Under PGD-Skip both ablations are white-box at every position: accuracy falls well below
    the clean stream's (n = 20, so only a large gap is asserted)."""
    x, y = digits_test.x[:20], digits_test.y[:20]
    for name, over in (("rmc-nonmasking", {"lr": 2.5e-3, "max_epochs": 3}), ("hindsight-adv", {})):
        d = _make(name, digits_model, digits_train, cache, **over)
        assert unavailable_reason_ok(name)
        order = stream_order(len(x), SEED)
        clean = _stream(d, x[order], y[order] if name == "hindsight-adv" else None).argmax(1)
        atk = attacks.create("pgd-skip", eps=0.3, seed=SEED, stream_seed=SEED).bind(d)
        result = atk.run(d.attack_model(), x, y)
        x_adv = result.x_adv
        assert float((x_adv - x).abs().max()) <= 0.3 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
        pred = result.stream_for(len(x), SEED).pred
        clean_acc = float((clean == y[order]).float().mean())
        adv_acc = float((pred == y).float().mean())
        assert adv_acc <= clean_acc - 0.4, (name, clean_acc, adv_acc)


def unavailable_reason_ok(name: str) -> bool:
    from bench.spec.grid import Cell

    cell = Cell(grid="g", dataset="digits", arch="small-cnn", train_defense="standard", train_params={},
                runtime_defense=f"{name}@x", runtime_params={}, attack="pgd-skip", attack_params={},
                threat="adaptive", eps=0.1, surrogate={}, limit=None, train_limit=None, seed=0,
                attack_label="pgd-skip")
    return unavailable_reason(cell) is None


def test_variant_names_resolve_to_their_base_defense():
    assert defenses.DEFENSES.get("rmc@k64") is defenses.DEFENSES.get("rmc")
    assert "rmc@k64" in defenses.DEFENSES and "rmc@" not in defenses.DEFENSES
    with pytest.raises(BenchError, match="unknown defense"):
        defenses.DEFENSES.get("nosuch@k64")


def test_per_point_record_columns_follow_the_stream_order():
    correct = torch.tensor([True, False, True, True, False])
    rec = perpoint.stream_record(correct, 3, [0.1] * 5, [{"adapt_epochs": e} for e in range(5)])
    order = stream_order(5, 3).tolist()
    assert rec["per_point"]["index"] == order
    assert rec["per_point"]["correct"] == "".join("1" if correct[i] else "0" for i in order)
    xs, ys = perpoint.series(rec, "robust_acc")
    bits = [int(c) for c in rec["per_point"]["correct"]]
    assert xs == [1, 2, 3, 4, 5]
    assert ys == pytest.approx([100 * sum(bits[: j + 1]) / (j + 1) for j in range(5)])
    assert perpoint.series(rec, "adapt_epochs")[1] == [0, 1, 2, 3, 4]
    assert perpoint.series(rec, "delay_s")[1] == [0.1] * 5
    assert "per_point_delay_s" not in perpoint.stream_record(correct, 3, [0.1] * 4)  # wrong length: left out


# -- bench plot -----------------------------------------------------------------------------------
def _record(runtime: str, attack: str, bits: str, seed: int = 0, **extra) -> dict:
    correct = torch.tensor([b == "1" for b in bits])
    order = stream_order(len(bits), seed)
    back = torch.empty_like(correct)
    back[order] = correct  # stream_record takes index order
    delays = [0.01 * (j + 1) for j in range(len(bits))]
    return {"status": "ok", "train_defense": "standard", "runtime_defense": runtime, "attack": attack,
            "threat": "base", "n": len(bits), "eps": 0.1, "norm": "Linf",
            "robust_acc": bits.count("1") / len(bits), **perpoint.stream_record(back, seed, delays), **extra}


def _captured_plots(monkeypatch) -> list:
    import matplotlib.axes

    calls = []
    real = matplotlib.axes.Axes.plot

    def spy(self, *args, **kw):
        calls.append((kw.get("label"), list(args[0]), list(args[1])))
        return real(self, *args, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)
    return calls


def test_plotted_series_equal_the_records(tmp_path, monkeypatch):
    from bench.report import grid_figures as figures
    from bench.spec import grid

    spec = grid.parse({"name": "g", "dataset": "digits", "arch": "small-cnn", "figures": [
        {"name": "acc", "kind": "vs-points", "rows": ["rmc"], "attacks": ["pgd"]},
        {"name": "delay", "kind": "vs-points", "metric": "delay_s", "rows": ["rmc"]},
        {"name": "k", "kind": "vs-param", "param": "k", "rows": ["rmc@k32", "rmc"], "attacks": ["pgd"]}]})
    recs = [_record("rmc", "pgd", "0110111011", params={"runtime": {"k": 128}}),
            _record("rmc@k32", "pgd", "0000110000", params={"runtime": {"k": 32}}),
            _record("none", "pgd", "0000000000")]
    calls = _captured_plots(monkeypatch)
    out = figures.write_grid_figures(spec, recs, tmp_path)
    assert [p.name for _, p, _ in out] == ["acc.png", "delay.png", "k.png"] and all(p.is_file() for _, p, _ in out)
    (lab1, x1, y1), (lab2, x2, y2), (lab3, x3, y3) = calls
    bits = recs[0]["per_point"]["correct"]
    assert x1 == list(range(1, 11)) and lab1 == "rmc: pgd"
    assert y1 == pytest.approx([100 * bits[: j + 1].count("1") / (j + 1) for j in range(10)])
    assert y2 == recs[0]["per_point_delay_s"]
    assert x3 == [32, 128] and y3 == pytest.approx([100 * recs[1]["robust_acc"], 100 * recs[0]["robust_acc"]])


def test_bad_figure_tables_are_one_line_errors():
    from bench.spec import grid

    base = {"name": "g", "dataset": "digits", "arch": "small-cnn"}
    for bad, msg in (({"kind": "pie"}, "kind must be"), ({"kind": "vs-param"}, "needs param"),
                     ({"kind": "vs-points", "metric": "nope"}, "metric"),
                     ({"kind": "vs-points", "colour": 1}, "unknown")):
        with pytest.raises(BenchError, match=msg):
            grid.parse({**base, "figures": [bad]})


TINY = """
name = "abl-tiny"
dataset = "digits"
arch = "small-cnn"
limit = 6
seed = 1
[train.standard]
epochs = 6
[runtime.rmc-nonmasking]
lr = 2.5e-3
max_epochs = 2
[runtime.hindsight-adv]
[[attacks]]
name = "pgd-skip"
threat = "adaptive"
eps = 0.1
[[figures]]
name = "t7"
kind = "vs-points"
rows = ["rmc-nonmasking", "hindsight-adv"]
[[figures]]
name = "epochs"
kind = "vs-points"
metric = "adapt_epochs"
"""


@pytest.mark.slow
def test_stream_cells_record_per_point_and_bench_plot_draws_them(tmp_path, monkeypatch):
    import json

    from click.testing import CliRunner

    from bench.cli import cli
    from bench.run.runner import Runner, RunOptions
    from bench.spec import grid

    path = tmp_path / "abl-tiny.toml"
    path.write_text(TINY)
    opts = RunOptions(cache_dir=tmp_path / "cache", results_dir=tmp_path / "results", tracking=False, progress=False)
    assert Runner(grid.load(str(path)), opts).run().failed == 0
    recs = [json.loads(line) for line in (tmp_path / "results" / "abl-tiny.jsonl").read_text().splitlines()]
    for r in recs:
        pp = r["per_point"]
        assert pp["index"] == stream_order(6, 1).tolist() and len(r["per_point_delay_s"]) == 6
        assert sorted(pp["correct"]) == sorted(r["per_example"])  # the same outcomes, in stream order
        assert ("adapt_epochs" in pp) == (r["runtime_defense"] == "rmc-nonmasking")
    calls = _captured_plots(monkeypatch)
    res = CliRunner().invoke(cli, ["plot", "--grid", str(path), "--results-dir", str(tmp_path / "results"),
                                   "--out-dir", str(tmp_path / "png"), "--no-tracking"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "png" / "t7.png").is_file() and (tmp_path / "png" / "epochs.png").is_file()
    by_row = {r["runtime_defense"]: r for r in recs}
    for label, _, ys in calls[:2]:
        r = by_row[label.split(":")[0]]
        assert ys == pytest.approx(perpoint.running_accuracy(r))
    assert calls[2][2] == by_row["rmc-nonmasking"]["per_point"]["adapt_epochs"]
    # without --out-dir the figures go beside the local board (not tracked), with --publish beside the
    # published one
    monkeypatch.chdir(tmp_path)
    for extra, folder in (([], tmp_path / "results" / "leaderboards" / "abl-tiny"),
                          (["--publish"], tmp_path / "leaderboards" / "abl-tiny")):
        res = CliRunner().invoke(cli, ["plot", "--grid", str(path), "--results-dir", "results", "--no-tracking",
                                       *extra])
        assert res.exit_code == 0, res.output
        assert sorted(p.name for p in folder.iterdir()) == ["epochs.png", "t7.png"]


@pytest.mark.slow
def test_neighbour_labels_figure_reads_the_cached_examples(tmp_path):
    """RMC Figure 1's bars: the class shares among x_adv's K nearest neighbours in D and in D'
    (it once crashed: crafting returns the examples and the attack's result)."""
    from bench.run.neighbour_figure import neighbour_series
    from bench.spec import grid

    path = tmp_path / "nb-tiny.toml"
    path.write_text('name = "nb-tiny"\ndataset = "digits"\narch = "small-cnn"\nlimit = 8\n'
                    '[train.standard]\nepochs = 3\n[runtime.webnn]\nk = 16\n'
                    '[[attacks]]\nname = "pgd"\neps = 0.2\n'
                    '[[figures]]\nname = "f1"\nkind = "neighbour-labels"\nrows = ["webnn"]\nattacks = ["pgd"]\n')
    spec = grid.load(str(path))
    series, caption = neighbour_series(spec, spec.figures[0], cache_dir=tmp_path / "cache")
    assert [s["label"] for s in series] == ["N(x_adv) in D", "N'(x_adv) in D'"]
    for s in series:
        assert len(s["y"]) == 10 and sum(s["y"]) == pytest.approx(100.0) and min(s["y"]) >= 0
    assert "K = 16" in caption
