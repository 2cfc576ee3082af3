"""Registries, data loaders and architectures on real data."""

from __future__ import annotations

import pytest
import torch

import attacks
import defenses
from bench.core import data, models
from bench.core.errors import BenchError
from bench.spec import grid
from tests.conftest import accuracy


@pytest.mark.parametrize("make", [
    lambda: attacks.create("pgdd"),
    lambda: defenses.create("standrd"),
    lambda: data.load("digitz", "test"),
    lambda: models.create("resnet33"),
    lambda: grid.load("defualt"),
])
def test_registry_typo_lists_valid_names(make):
    with pytest.raises(BenchError) as err:
        make()
    msg = str(err.value)
    assert "unknown" in msg and "Valid" in msg and "Did you mean" in msg


def test_registry_lists_and_kinds():
    assert {"fgsm", "pgd"} <= set(attacks.list_names())
    assert "standard" in defenses.list_names("train") and "none" in defenses.list_names("runtime")
    assert "none" not in defenses.list_names("train")
    with pytest.raises(BenchError):
        defenses.list_names("sometimes")


def test_bad_attack_parameters_are_one_line_errors():
    for kw in ({"eps": -0.1}, {"eps": 1.5}, {"steps": 0}, {"norm": "L3"}):
        with pytest.raises(BenchError):
            attacks.create("pgd", **kw)
    with pytest.raises(BenchError, match="bad parameters"):
        attacks.create("pgd", epsilon=0.1)


def test_digits_loader(digits_train, digits_test):
    assert digits_train.x.shape[1:] == (1, 8, 8) and len(digits_test) == 500
    assert digits_train.x.dtype == torch.float32 and digits_train.y.dtype == torch.int64
    assert 0.0 <= float(digits_train.x.min()) and float(digits_train.x.max()) <= 1.0
    assert len(digits_train) + len(digits_test) == 1797
    assert data.load("digits", "test", limit=7).x.shape[0] == 7


@pytest.mark.parametrize("name,split,n,shape", [
    ("mnist", "test", 10000, (1, 28, 28)),
    ("fashion-mnist", "train", 60000, (1, 28, 28)),
    ("fashion-mnist", "test", 10000, (1, 28, 28)),
    ("cifar10", "test", 1000, (3, 32, 32)),
])
def test_loaders_on_shared_data(shared_data, name, split, n, shape):
    ds = data.load(name, split, data_dir=shared_data)
    assert len(ds) == n and tuple(ds.x.shape[1:]) == shape
    assert ds.x.dtype == torch.float32 and 0.0 <= float(ds.x.min()) and float(ds.x.max()) <= 1.0
    assert ds.y.dtype == torch.int64 and set(ds.y.unique().tolist()) == set(range(10))
    assert float(ds.x.max()) == 1.0  # really scaled from uint8, not left in [0, 255] / 255^2


def test_loader_env_var(shared_data, monkeypatch):
    monkeypatch.setenv("BENCH_DATA_DIR", str(shared_data))
    assert len(data.load("cifar10", "test", limit=5)) == 5


@pytest.mark.parametrize("name,expect", [("mnist", "t10k-images-idx3-ubyte.gz"),
                                         ("fashion-mnist", "t10k-images-idx3-ubyte.gz"),
                                         ("cifar10", "cifar10_test.npz")])
def test_loaders_fail_clearly_when_files_absent(tmp_path, name, expect):
    with pytest.raises(BenchError) as err:
        data.load(name, "test", data_dir=tmp_path)
    msg = str(err.value)
    assert expect in msg and str(tmp_path) in msg and "\n" not in msg


def test_mnist_train_split_missing_in_shared_data(shared_data):
    with pytest.raises(BenchError, match="train-images-idx3-ubyte.gz"):
        data.load("mnist", "train", data_dir=shared_data)


def test_corrupt_idx_file(tmp_path):
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"nope")
    with pytest.raises(BenchError, match="cannot read IDX"):
        data.load("mnist", "test", data_dir=tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("arch,fname,expected", [("resnet20", "resnet20-12fca82f.th", 0.915),
                                                 ("resnet32", "resnet32-d509ac18.th", 0.928)])
def test_cifar_checkpoints_load_with_their_accuracy(shared_weights, cifar_test, arch, fname, expected):
    model = models.load(arch, shared_weights / "cifar10-resnet" / fname)
    acc = accuracy(model, cifar_test.x, cifar_test.y)
    assert abs(acc - expected) < 0.01, acc


@pytest.mark.parametrize("arch,shape", [("small-cnn", (1, 8, 8)), ("small-cnn", (1, 28, 28)),
                                        ("lenet5", (1, 8, 8)), ("lenet5", (1, 28, 28)),
                                        ("resnet20", (3, 32, 32)), ("resnet56", (3, 32, 32))])
def test_architectures_shapes_and_features(arch, shape):
    model = models.create(arch, 10, shape[0]).eval()
    x = torch.rand(2, *shape)
    logits = model(x)
    assert logits.shape == (2, 10)
    assert torch.allclose(model.head(model.features(x)), logits, atol=1e-6)
    assert model.features(x).dim() == 2


def test_checkpoint_roundtrip_and_safe_loading(tmp_path, digits_model, digits_test):
    path = tmp_path / "m.pt"
    models.save(digits_model, path, "small-cnn")
    loaded = models.load("small-cnn", path, in_channels=1)
    assert accuracy(loaded, digits_test.x, digits_test.y) == accuracy(digits_model, digits_test.x, digits_test.y)
    with pytest.raises(BenchError, match="does not fit"):
        models.load("lenet5", path, in_channels=1)


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /dev/null",))


def test_malicious_or_corrupt_checkpoint_is_refused(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": _Evil()}, evil)
    with pytest.raises(BenchError, match="weights_only"):
        models.load("small-cnn", evil)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00garbage")
    with pytest.raises(BenchError, match="cannot load checkpoint"):
        models.load("small-cnn", junk)
    with pytest.raises(BenchError, match="not found"):
        models.load("small-cnn", tmp_path / "absent.pt")
