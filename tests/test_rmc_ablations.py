"""RMC paper Table 7's two ablations (non-masking RMC, hindsight adversarial training on labelled U),
per-point stream records and ``base@variant`` defense names, on digits (CPU, real data)."""

from __future__ import annotations

import pytest
import torch

import attacks
import defenses
from bench import perpoint
from bench.errors import BenchError
from bench.runner import resolve_params, unavailable_reason
from bench.stream import stream_order

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
        x_adv = atk(d.attack_model(), x, y)
        assert float((x_adv - x).abs().max()) <= 0.3 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
        pred, _ = atk.online_result(len(x), SEED)
        clean_acc = float((clean == y[order]).float().mean())
        adv_acc = float((pred == y).float().mean())
        assert adv_acc <= clean_acc - 0.4, (name, clean_acc, adv_acc)


def unavailable_reason_ok(name: str) -> bool:
    from bench.grid import Cell

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
    rec = {"per_point": perpoint.stream_record(correct, 3, [0.1] * 5, [{"adapt_epochs": e} for e in range(5)])}
    order = stream_order(5, 3).tolist()
    assert rec["per_point"]["index"] == order
    assert rec["per_point"]["correct"] == "".join("1" if correct[i] else "0" for i in order)
    xs, ys = perpoint.series(rec, "robust_acc")
    bits = [int(c) for c in rec["per_point"]["correct"]]
    assert xs == [1, 2, 3, 4, 5]
    assert ys == pytest.approx([100 * sum(bits[: j + 1]) / (j + 1) for j in range(5)])
    assert perpoint.series(rec, "adapt_epochs")[1] == [0, 1, 2, 3, 4]
    assert "delay_s" not in perpoint.stream_record(correct, 3, [0.1] * 4)  # wrong length: left out
