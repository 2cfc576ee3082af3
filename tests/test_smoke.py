"""Paper scale before the GPU bill: --smoke, --synthetic and the preflight."""

from __future__ import annotations

import pytest
import torch

from bench.core import data
from bench.spec import grid as grids
from bench.spec.smoke import LIMIT, RUNTIME_CAPS, TRAIN_LIMIT, smoke_spec
from tests.test_extension_api import one_line, run_cli


@pytest.mark.parametrize("name,shape", [("cifar10", (3, 32, 32)), ("mnist", (1, 28, 28)), ("digits", (1, 8, 8))])
def test_synthetic_has_the_datasets_shape_and_labels(tmp_path, capsys, name, shape):
    if name == "digits":  # always present: synthetic only stands in for missing files
        assert not data.load(name, "test", tmp_path, 20, synthetic=True).x.std() == 0
        ds = data.make_synthetic(name, "test", 20)
    else:
        ds = data.load(name, "train", tmp_path, 50, synthetic=True)
        assert "synthetic data" in capsys.readouterr().err
    assert tuple(ds.x.shape[1:]) == shape and ds.num_classes == 10
    assert ds.x.min() >= 0 and ds.x.max() <= 1 and set(ds.y.tolist()) <= set(range(10))
    assert (data.make_synthetic(name, "test", 20).x == data.make_synthetic(name, "test", 20).x).all()  # seeded


def test_smoke_rule_caps_every_budget():
    spec = smoke_spec(grids.load("rmc-defense-aware-cifar10"))
    assert spec.name == "rmc-defense-aware-cifar10.smoke" and spec.limit == LIMIT and spec.train_limit == TRAIN_LIMIT
    assert all(p["epochs"] <= 1 for p in spec.train.values())
    assert all(p["steps"] <= 2 for p in (a.params for a in spec.attacks))
    assert spec.runtime["rmc"]["k"] <= RUNTIME_CAPS["k"] and spec.runtime["rmc"]["copies"] == 1
    assert spec.runtime["rmc"]["db_params"]["steps"] <= 2
    assert spec.runtime["rmc"]["max_epochs"] <= 2 and spec.runtime["rmc"]["patience"] == 1
    full = grids.load("rmc-defense-aware-cifar10")
    assert [c.key for c in spec.cells()] == [c.key for c in full.cells()]  # every cell, none added
    assert {a.params.get("q") for a in spec.attacks} == {a.params.get("q") for a in full.attacks}  # not budgets



def test_smoke_caps_each_database_attacks_own_budget():
    """JSMA's pixel-pair iterations and C&W's search steps in D' are capped in their own db_params
    tables (PGD takes no max_iters), and each attack of the mix gets exactly its table."""
    import attacks
    from defenses.database import attack_params_for

    spec = smoke_spec(grids.load("rmc-ablations-cifar10"))
    db = spec.runtime["rmc@all-in"]["db_params"]
    assert db["jsma"] == {"max_iters": 2} and db["cw-l2"] == {"binary_search_steps": 1} and db["steps"] == 2
    for name in spec.runtime["rmc@all-in"]["db_attacks"]:
        attacks.create(name, **attack_params_for(name, db))  # every attack of the mix accepts its params
    assert attack_params_for("jsma", db)["max_iters"] == 2 and "max_iters" not in attack_params_for("pgd", db)
    assert "db_params" not in spec.runtime["hindsight-adv"]  # a defense without a D' gets none


def test_smoke_keeps_a_purifiers_kernel_size_and_caps_k_of_the_database_defenses():
    spec = smoke_spec(grids.load("imagenet-ride-paper"))  # median k = 3 ... 11 (RIDE supplement Table 4)
    assert [spec.runtime[f"median@k{k}"]["k"] for k in (3, 5, 7, 9, 11)] == [3, 5, 7, 9, 11]
    import defenses

    for k in (9, 11):  # the smoke grid's median must be constructible (an even kernel is refused)
        assert defenses.create("median", **spec.runtime[f"median@k{k}"]).k == k
    assert smoke_spec(grids.load("cifar10")).runtime["deepnn"]["k"] <= RUNTIME_CAPS["k"]

SMALL = """
name = "small"
dataset = "digits"
arch = "small-cnn"
limit = 40
[train.standard]
epochs = 5
[runtime.none]
[runtime.deepnn]
[[attacks]]
name = "pgd"
eps = 0.1
"""


@pytest.mark.slow
def test_smoke_records_never_reach_real_results_or_leaderboards(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "small.toml").write_text(SMALL)
    code, out, err = run_cli("run", "--grid", "small.toml", "--smoke", "--no-tracking", "--cache-dir", "c",
                             capsys=capsys)
    assert code == 0, err
    assert (tmp_path / "results" / "small.smoke.jsonl").is_file()
    assert not (tmp_path / "results" / "small.jsonl").exists() and not (tmp_path / "leaderboards").exists()
    assert not (tmp_path / "results" / "leaderboards").exists()
    assert "peak memory (CPU RSS): largest cell" in out
    from bench.track.results import load_records

    recs = load_records(tmp_path / "results" / "small.smoke.jsonl")
    assert len(recs) == 2 and all(r["status"] == "ok" and r["n"] == LIMIT and r["peak_rss_mb"] > 0 for r in recs)


def test_preflight_missing_training_split_is_one_line_and_writes_nothing(tmp_path, capsys):
    args = ("run", "--grid", "cifar10", "--limit", "5", "--no-tracking", "--data-dir", str(tmp_path),
            "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"))
    (tmp_path / "cifar10").mkdir()
    x = data.make_synthetic("cifar10", "test", 8)  # a test split exists, the training split does not
    import numpy as np

    np.savez(tmp_path / "cifar10" / "cifar10_test.npz", x=(x.x * 255).byte().permute(0, 2, 3, 1).numpy(),
             y=x.y.numpy())
    for extra in ((), ("--dry-run",)):
        code, _, err = run_cli(*args, *extra, capsys=capsys)
        one_line(code, err, "cifar10 train files not found")
        assert not (tmp_path / "r").exists()


def test_synthetic_stands_in_only_for_the_missing_split(shared_data, capsys):
    """CI's smoke: the real CIFAR-10 test images where present, synthetic data only for the absent
    training split, and the output says which."""
    real = data.load("cifar10", "test", shared_data, 8)
    capsys.readouterr()
    test = data.load("cifar10", "test", shared_data, 8, synthetic=True)
    assert "synthetic data" not in capsys.readouterr().err
    assert torch.equal(test.x, real.x) and torch.equal(test.y, real.y)
    train = data.load("cifar10", "train", shared_data, 8, synthetic=True)
    assert "synthetic data: cifar10 train" in capsys.readouterr().err
    assert tuple(train.x.shape) == (8, 3, 32, 32) and not torch.equal(train.x, real.x)
