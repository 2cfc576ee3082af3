"""The Ray executor on a local cluster gives the same records as the local executor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.run.executors import LocalExecutor, RayExecutor
from bench.run.runner import Runner, RunOptions
from bench.spec import grid
from bench.track.results import MEASUREMENT_FIELDS

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


# -- the real ci grid through the CLI. In this file, so that one test worker holds every Ray test, and first,
# so that its `bench run --executor ray` starts before this module's own local cluster (one at a time).
def _bench_run_ci(folder: Path, executor: str) -> dict[str, dict]:
    import os
    import subprocess
    import sys

    folder.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [sys.executable, "-m", "bench", "run", "--grid", "ci", "--executor", executor, "--no-tracking",
           "--no-leaderboard", "--cache-dir", str(folder / "cache"), "--results-dir", str(folder / "results")]
    done = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = (folder / "results" / "ci.jsonl").read_text().splitlines()
    return {r["cell_id"]: {k: v for k, v in r.items() if k not in TIMING} for r in map(json.loads, lines)}


def _local_ci_records(tmp_path: Path) -> dict[str, dict]:
    """The local executor's ci-grid records. .ci/run runs that very grid from an empty cache before
    pytest and names its results in $BENCH_CI_LOCAL_RESULTS: CI reads them instead of running the
    grid a second time (minutes on 2 cores); anywhere else the test runs it here."""
    import os

    shared = os.environ.get("BENCH_CI_LOCAL_RESULTS")
    if not shared:
        return _bench_run_ci(tmp_path / "local", "local")
    recs = [json.loads(line) for line in Path(shared).read_text().splitlines()]
    return {r["cell_id"]: {k: v for k, v in r.items() if k not in TIMING} for r in recs}


@pytest.mark.slow
def test_ray_equals_local_on_the_ci_grid(tmp_path):
    """The real `bench run --grid ci` under both executors, each from an empty cache (so training
    runs under each executor too): every record field but timing is equal."""
    local = _local_ci_records(tmp_path)
    on_ray = _bench_run_ci(tmp_path / "ray", "ray")
    assert set(local) == set(on_ray) and len(local) == len(grid.load("ci").cells())
    diffs = {cid: {k: (local[cid].get(k), on_ray[cid].get(k)) for k in set(local[cid]) | set(on_ray[cid])
                   if local[cid].get(k) != on_ray[cid].get(k)} for cid in local}
    assert {cid: d for cid, d in diffs.items() if d} == {}



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


def test_every_ray_start_turns_the_dashboard_off(monkeypatch):
    """A dashboard is a web server on an open port that nobody asked for: both places that start Ray
    (the executor, D''s sharded database build) pass include_dashboard=False."""
    from bench.run import executors

    calls: list[dict] = []

    class Started(Exception):
        pass

    class FakeRay:
        def is_initialized(self) -> bool:
            return False

        def init(self, **kwargs) -> None:
            calls.append(kwargs)
            raise Started

    monkeypatch.setattr(executors, "import_ray", FakeRay)
    with pytest.raises(Started):
        RayExecutor().start(None)
    with pytest.raises(Started):
        next(executors.ray_map(print, [{}]))
    assert [c.get("include_dashboard") for c in calls] == [False, False]
