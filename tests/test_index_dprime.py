"""IVF-PQ index (defenses/index.py) and the out-of-core D' (defenses/dprime.py, defenses/shards.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import defenses
from bench.benchmarks.index_scale import exact_topk, generator_spec, make_features, sample
from bench.core.errors import BenchError
from bench.run.runner import resolve_params
from defenses import dprime
from defenses import shards as sh
from defenses.index import DEFAULT_NPROBE, DEFAULT_REFINE, IvfPqIndex, build_index

pytest.importorskip("faiss")


def _make(name, model, train_set, cache_dir, **over):
    factory = defenses.DEFENSES.get(name)
    params = resolve_params(factory, "digits", over, seed=0, cache_dir=str(cache_dir))
    return factory(**params).prepare(model, train_set)


@pytest.mark.parametrize("nlist", [128, None])  # None: default_nlist, about sqrt(N) = 63
def test_ivfpq_recall_at_k_on_clustered_synthetic_features(tmp_path, nlist):
    """CI-sized version of bench/benchmarks/index_scale.py: 4,000 x 128 clustered features (float16 shards),
    K = 128; the chosen defaults (nprobe, refine) must keep recall@K >= 0.95 against exact search."""
    spec = generator_spec(n=4000, dim=128, clusters=8, rank=16, seed=0)
    xb = make_features(tmp_path, spec)
    q = sample(spec, 40, seed=7)
    k = 128
    truth = exact_topk(xb, q, k)

    def recall(ids):
        return np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(ids, truth)])

    index = IvfPqIndex(vectors=xb, nlist=nlist, m=16)
    assert (index.nprobe, index.refine) == (DEFAULT_NPROBE, DEFAULT_REFINE)
    assert index.nlist == (nlist or int(np.sqrt(len(xb))))
    reranked = recall(index.search(torch.from_numpy(q), k)[1].numpy())
    assert reranked >= 0.95
    # the codes alone are lossy (the test could fail): the exact re-ranking is what lifts recall
    assert recall(index.index.search(q, k)[1]) < 0.95


@pytest.mark.parametrize("kw, words", [
    ({"index": "hnsw"}, "index must be one of"),
    ({"index": "ivfpq", "m": 7}, "must divide the feature dimension"),
    ({"index": "ivfpq", "nlist": 10_000}, "exceeds the"),
    ({"index": "flat", "nprobe": 4}, "only apply to index"),
])
def test_bad_index_params_are_one_clear_line(kw, words):
    with pytest.raises(BenchError, match=words):
        build_index(torch.randn(600, 64), **kw)


@pytest.mark.slow  # 10-25 s on the loaded 2-core box (D' attacks, RMC adaptation)
def test_deepnn_ivfpq_predicts_like_flat_on_digits(digits_model, digits_train, digits_test, tmp_path):
    flat = _make("deepnn", digits_model, digits_train, tmp_path)
    ivf = _make("deepnn", digits_model, digits_train, tmp_path, index="ivfpq", nlist=16, m=8)
    assert isinstance(ivf.index, IvfPqIndex)
    x = digits_test.x[:200]
    agree = (flat.predict(x).argmax(1) == ivf.predict(x).argmax(1)).float().mean()
    assert agree >= 0.98
    assert (flat.neighbours(x[:20]) == ivf.neighbours(x[:20])).float().mean() > 0.8


@pytest.mark.slow  # 10-25 s on the loaded 2-core box (D' attacks, RMC adaptation)
def test_dprime_job_killed_midway_resumes_to_the_same_shards(digits_model, digits_train, tmp_path):
    small = digits_train.subset(150)
    kw = dict(copies=2, attack_names=["pgd"], attack_params={"eps": 0.1, "steps": 3}, seed=0, shard_size=40)
    whole = dprime.build_disk_database(digits_model, small, folder=tmp_path / "whole", **kw)
    killed = dprime.build_disk_database  # first run stops after 3 of the 12 shards, as a killed job would
    with pytest.raises(BenchError, match="incomplete"):
        killed(digits_model, small, folder=tmp_path / "resumed", stop_after=3, **kw)
    assert len(sh.done_shards(tmp_path / "resumed")) == 3
    calls = []

    def counting_map(fn, kwargs_list):
        calls.extend(kw_["task"].key for kw_ in kwargs_list)
        return dprime.local_map(fn, kwargs_list)

    resumed = dprime.build_disk_database(digits_model, small, folder=tmp_path / "resumed", map_fn=counting_map, **kw)
    assert len(calls) == 12 - 3  # finished shards are skipped
    a, b = sh.done_shards(tmp_path / "whole"), sh.done_shards(tmp_path / "resumed")
    assert a.keys() == b.keys() and len(a) == 12
    assert all(a[k]["sha256"] == b[k]["sha256"] and a[k].get("images_sha256") == b[k].get("images_sha256")
               for k in a)
    assert torch.equal(whole.x[torch.arange(len(whole.x))], resumed.x[torch.arange(len(resumed.x))])
    # adversarial rows: in the eps ball of their clean row (uint8 rounding: 1/510 more)
    n = len(small)
    diff = (whole.x[torch.arange(n, 3 * n)] - whole.x[torch.arange(n)].repeat(2, 1, 1, 1)).abs().max()
    assert 0 < float(diff) <= 0.1 + 1 / 255


@pytest.mark.slow  # 10-25 s on the loaded 2-core box (D' attacks, RMC adaptation)
def test_rmc_with_disk_dprime_equals_in_memory(digits_model, digits_train, digits_test, tmp_path):
    small = digits_train.subset(300)
    over = dict(k=32, copies=1, max_epochs=2, patience=1, db_params={"eps": 0.1, "steps": 3})
    mem = _make("rmc", digits_model, small, tmp_path / "m", **over)
    disk = _make("rmc", digits_model, small, tmp_path / "d", database="disk", shard_size=len(small), **over)
    assert isinstance(disk.database, dprime.DiskDatabase)
    assert torch.equal(mem.database.x, disk.database.x[torch.arange(len(mem.database.x))])
    torch.testing.assert_close(mem.database.features, disk.database.features, rtol=2e-3, atol=2e-3)  # float16
    x = digits_test.x[:5]
    # float16 feature shards reorder near-ties: the K nearest rows agree up to those (exactly equal only
    # when float16 rounding happens to keep every order, as it did on 2 threads and not on 1)
    n_mem, n_disk = mem.neighbours(x), disk.neighbours(x)
    overlap = [len(set(a.tolist()) & set(b.tolist())) / len(a) for a, b in zip(n_mem, n_disk)]
    assert min(overlap) >= 0.9, overlap
    assert torch.equal(mem.predict(x).argmax(1), disk.predict(x).argmax(1))
