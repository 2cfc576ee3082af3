"""Shared fixtures: real data from ../shared/data and small trained models on CPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from bench.core import data, models

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BENCH_SHARED_DIR", REPO.parent / "shared"))
SHARED_DATA = SHARED / "data"
SHARED_WEIGHTS = SHARED / "weights"


def pytest_configure(config: pytest.Config) -> None:
    """Run the tests at the cells' thread count ($BENCH_NUM_THREADS, default 1), set once here rather
    than by whichever test first runs a cell in-process. The tests' tensors are small (8x8 digits,
    batches of a few hundred): a second intra-op thread costs more in synchronisation than it saves,
    several times over when the cores are shared (measured: 3 digits epochs took 3.7 s of CPU on one
    thread, 13.9 s on two). Parallelism comes from test processes side by side (pytest-xdist, see
    pyproject's addopts)."""
    # One process per `bench run` unless a test asks for --jobs: test processes already share the
    # cores (pytest-xdist), and a run's output and timing stay those of one process.
    os.environ.setdefault("BENCH_JOBS", "1")
    value = os.environ.get("BENCH_NUM_THREADS", "1")
    torch.set_num_threads(int(value) if value.isdigit() and int(value) > 0 else 1)


def _absent(what: str, path: Path) -> None:
    msg = f"{what} not found at {path}; set BENCH_SHARED_DIR to the shared/ folder"
    if os.environ.get("BENCH_REQUIRE_SHARED"):  # CI: missing data must fail, not skip
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (or $BENCH_SHARED_DIR/data); tests using it skip, saying why, when absent."""
    if not (SHARED_DATA / "fashion-mnist").is_dir():
        _absent("real test data", SHARED_DATA)
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_weights() -> Path:
    if not (SHARED_WEIGHTS / "cifar10-resnet").is_dir():
        _absent("shared weights", SHARED_WEIGHTS)
    return SHARED_WEIGHTS


@pytest.fixture(autouse=True)
def scratch_registries(monkeypatch):
    """What a test registers (a plugin file, an in-process `bench --plugin`) is forgotten after it: the
    registries are process-wide, and a later test in the same worker must see the built-ins only."""
    from bench.core.arch_base import ARCHS
    from bench.core.dataset_base import DATASETS
    from bench.core.methods import ATTACKS, DEFENSES

    for reg in (ATTACKS, DEFENSES, ARCHS, DATASETS):
        reg.list_names()  # populated first: the snapshot must hold the built-ins, not an empty table
        monkeypatch.setattr(reg, "_entries", dict(reg._entries))
        monkeypatch.setattr(reg, "_origins", dict(reg._origins))


@pytest.fixture
def one_thread():
    """One intra-op thread for the test (restored after): float sums in one order, so results that
    train or adapt for many steps are the same on every machine (`pytest.mark.usefixtures`)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def digits_train() -> data.Dataset:
    return data.load("digits", "train")


@pytest.fixture(scope="session")
def digits_test() -> data.Dataset:
    return data.load("digits", "test")


@pytest.fixture(scope="session")
def digits_model(digits_train: data.Dataset) -> torch.nn.Module:
    """A standard-trained small CNN on digits (about 98% clean test accuracy, a few seconds)."""
    import defenses

    torch.manual_seed(0)  # weight init draws from the global RNG: fix it so every test sees one model
    model = models.create("small-cnn", 10, 1)
    model = defenses.create("standard", epochs=30, lr=1e-3, seed=0).train(model, digits_train)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


@pytest.fixture(scope="session")
def nn_cache(tmp_path_factory) -> Path:
    """One cache folder for the neighbour defenses' D' on ``digits_model``: the cache is content-addressed
    (model, data, attack, seed), so every module that builds the same D' loads it instead of attacking
    the training set again."""
    return tmp_path_factory.mktemp("nn-cache")


@pytest.fixture(scope="session")
def cifar_resnet32(shared_weights: Path) -> torch.nn.Module:
    return models.load("resnet32", shared_weights / "cifar10-resnet" / "resnet32-d509ac18.th")


@pytest.fixture(scope="session")
def cifar_test(shared_data: Path) -> data.Dataset:
    return data.load("cifar10", "test", data_dir=shared_data)


def accuracy(model, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())
