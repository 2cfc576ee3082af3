"""The Ray executor on a local cluster gives the same records as the local executor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import grid
from bench.executors import LocalExecutor, RayExecutor
from bench.results import MEASUREMENT_FIELDS
from bench.runner import Runner, RunOptions

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install -e '.[ray]'")

GRID = """
name = "rayg"
dataset = "digits"
arch = "small-cnn"
limit = 30
train_limit = 300
seed = 0
[train.standard]
epochs = 2
[runtime.none]
[runtime.median]
[[attacks]]
name = "fgsm"
eps = 0.1
[[attacks]]
name = "pgd"
eps = 0.1
params = { steps = 5 }
"""
TIMING = MEASUREMENT_FIELDS


@pytest.fixture(scope="module")
def local_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _run(folder: Path, executor, tracking: bool = False) -> dict[str, dict]:
    folder.mkdir()
    (folder / "g.toml").write_text(GRID)
    opts = RunOptions(cache_dir=folder / "cache", results_dir=folder / "results", tracking=tracking,
                      tracking_uri=f"sqlite:///{folder / 'mlflow.db'}", progress=False)
    summary = Runner(grid.load(str(folder / "g.toml")), opts).run(executor)
    assert summary.failed == 0 and summary.ran == 4
    lines = (folder / "results" / "rayg.jsonl").read_text().splitlines()
    return {r["cell_id"]: {k: v for k, v in r.items() if k not in TIMING} for r in map(json.loads, lines)}


@pytest.mark.slow
def test_ray_records_equal_local_records(local_cluster, tmp_path):
    local = _run(tmp_path / "local", LocalExecutor())
    on_ray = _run(tmp_path / "ray", RayExecutor(), tracking=True)
    assert on_ray == local
    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path / 'ray' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("rayg")
    runs = [r for r in client.search_runs([exp.experiment_id]) if "cell_id" in r.data.tags]
    assert sorted(r.data.tags["cell_id"] for r in runs) == sorted(on_ray)
    parent = [r for r in client.search_runs([exp.experiment_id]) if "executor" in r.data.tags]
    assert parent and parent[0].data.tags["executor"] == "ray"
