"""Nearest-neighbour runtime defenses: faiss search, D' caching, RMC's stream state, robustness."""

from __future__ import annotations

import pytest
import torch

import attacks
import defenses
from bench.run.runner import resolve_params
from defenses import database
from defenses.knn_index import KnnIndex, brute_force_search


def _make(name: str, model, train_set, cache_dir, **over):
    factory = defenses.DEFENSES.get(name)
    params = resolve_params(factory, "digits", over, seed=0, cache_dir=str(cache_dir))
    return factory(**params).prepare(model, train_set)


def test_faiss_matches_brute_force(shared_data):
    from bench.core import data

    fm = data.load("fashion-mnist", "test", shared_data, limit=600)
    feats = fm.x.flatten(1)
    db, queries = feats[100:], feats[:100]
    index = KnnIndex(db)
    d1, i1 = index.search(queries, 10)
    d2, i2 = brute_force_search(db, queries, 10)
    assert torch.allclose(d1, d2, rtol=1e-3, atol=1e-3)
    assert (i1 == i2).float().mean() > 0.99  # ties may order differently
    index.replace(torch.tensor([int(i1[0, 0])]), queries[:1] + 100)  # move the nearest away
    assert index.search(queries[:1], 1)[1][0, 0] != i1[0, 0]


def test_database_is_cached_and_reused(digits_model, digits_train, tmp_path):
    small = digits_train.subset(200)
    before = dict(database.BUILD_COUNTER)
    db1 = database.build_database(digits_model, small, 1, ["pgd"], {"eps": 0.1}, 0, tmp_path)
    assert database.BUILD_COUNTER["database"] == before["database"] + 1
    db2 = database.build_database(digits_model, small, 1, ["pgd"], {"eps": 0.1}, 0, tmp_path)
    assert database.BUILD_COUNTER["database"] == before["database"] + 1  # no second attack run
    assert database.BUILD_COUNTER["features"] == before["features"] + 1  # features reused too
    assert torch.equal(db1.x, db2.x) and torch.equal(db1.features, db2.features)
    assert len(db1.y) == 400 and int(db1.is_adv.sum()) == 200
    adv, clean = db1.x[200:], db1.x[:200]
    assert float((adv - clean).abs().max()) <= 0.1 + 1 / 255


@pytest.fixture(scope="module")
def stream(digits_model, digits_test):
    x, y = digits_test.x[:60], digits_test.y[:60]
    return x, y, attacks.create("pgd", eps=0.2)(digits_model, x, y)


@pytest.mark.slow
def test_rmc_state_changes_along_the_stream_and_restore_is_exact(digits_model, digits_train, stream, nn_cache):
    x, _, _ = stream
    rmc = _make("rmc", digits_model, digits_train, nn_cache)
    start = rmc.snapshot()
    rmc.predict(x[:3])
    after = rmc.snapshot()
    changed = [k for k in start["model"] if not torch.equal(start["model"][k], after["model"][k])]
    assert changed, "adaptation did not change any weight"
    rmc.restore(start)
    assert all(torch.equal(v, rmc.adapted.state_dict()[k]) for k, v in start["model"].items())
    # Replaying from the restored state reproduces the same predictions and the same weights.
    first = rmc.predict(x[:3])
    rmc.restore(start)
    again = rmc.predict(x[:3])
    assert torch.equal(first, again)
    assert len(rmc.last_delays) == 3 and all(d > 0 for d in rmc.last_delays)


@pytest.mark.slow
def test_rmc_keeps_batchnorm_statistics_frozen(cifar_resnet32, cifar_test, tmp_path):
    from bench.core.data import Dataset

    small = Dataset("cifar10", "train", cifar_test.x[:64], cifar_test.y[:64], 10)
    rmc = defenses.create("rmc", k=32, copies=0, patience=1, max_epochs=2, calibrate=True, cache_dir=str(tmp_path))
    rmc.prepare(cifar_resnet32, small)
    stats = {k: v.clone() for k, v in rmc.adapted.state_dict().items() if "running" in k}
    rmc.predict(cifar_test.x[100:102])
    after = rmc.adapted.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in stats.items())
    assert any(not torch.equal(rmc._initial["model"][k], after[k]) for k in after if "weight" in k)


@pytest.mark.slow
def test_rmc_plus_rewrites_database_and_restores_it(digits_model, digits_train, stream, nn_cache):
    x, _, _ = stream
    plus = _make("rmc-plus", digits_model, digits_train, nn_cache, delta=1.0)
    start = plus.snapshot()
    probs = plus.row_probs().clone()  # cached per database state (pgd-nn reads it every step)
    plus.predict(x[:2])
    assert not torch.equal(plus.database.x, start["db_x"])
    assert torch.equal(plus.row_probs(), plus.database_probs()) and not torch.equal(plus.row_probs(), probs)
    plus.restore(start)
    assert torch.equal(plus.database.x, start["db_x"]) and torch.equal(plus.index.vectors(), start["db_features"])
    assert torch.equal(plus.row_probs(), probs)


@pytest.mark.slow
def test_base_pgd_robustness_ordering(digits_model, digits_train, stream, nn_cache):
    # Measured on these 60 digits at eps 0.2: none ~2%, deepnn ~70%, webnn ~80%, rmc ~70-77%. On digits
    # DeepNN is far from "close to none" (the paper's CIFAR-10 finding); we assert what holds here.
    x, y, x_adv = stream
    acc = {}
    for name in ("none", "deepnn", "webnn", "rmc"):
        d = _make(name, digits_model, digits_train, nn_cache)
        d.reset()
        acc[name] = float((d.predict(x_adv).argmax(1) == y).float().mean())
        d.reset()
        assert float((d.predict(x).argmax(1) == y).float().mean()) > 0.9, name
    assert acc["none"] < 0.1
    assert acc["rmc"] > acc["none"] + 0.4
    assert acc["webnn"] > acc["none"] + 0.4
    assert acc["deepnn"] > acc["none"]
