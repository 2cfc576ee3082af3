"""One `bench run` is one MLflow parent run, whatever --jobs: the main process opens it in the
experiment ``advbench/<grid>`` and its workers nest their cells under it (issue 32)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.track.tracker import PARENT_RUN_ENV, PARENT_TAG, Tracker, experiment_name, parent_run_name
from tests.test_cli import bench

GRID = """name = "onep"
dataset = "digits"
arch = "small-cnn"
limit = 20
train_limit = 200
seed = 0
[train.standard]
epochs = 1
[train.adv-fgsm]
epochs = 1
[runtime.none]
[[attacks]]
name = "fgsm"
eps = [0.05, 0.1]
"""


def runs_of(uri: str, grid: str) -> list:
    import mlflow

    client = mlflow.tracking.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment_name(grid))
    return client.search_runs([exp.experiment_id], max_results=1000)


def test_experiment_and_parent_names():
    assert experiment_name("default") == "advbench/default"  # never MLflow's own "Default"
    assert parent_run_name("default", 0).startswith("default 19")  # the grid, then the local start time


@pytest.mark.slow
def test_an_attached_tracker_nests_cells_under_the_given_parent_and_never_ends_it(tmp_path):
    """A --jobs worker's Tracker: its cells (and a cell cut by Ctrl-C) nest under the main process's
    parent run, which stays RUNNING for its owner to end."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with Tracker("onep", uri, run_name="main") as owner:
        parent = owner.parent_id
        with Tracker("onep", uri, parent_run_id=parent) as worker:
            assert worker.parent_id == parent
            assert worker.mirror({"key": "a/b", "cell_id": "c1", "clean_acc": 0.5, "status": "ok"}, {"eps": 0.1})
        assert mlflow.active_run().info.run_id == parent  # the worker left the owner's run alone
    mlflow_client = mlflow.tracking.MlflowClient(uri)
    mlflow_client.update_run(parent, status="RUNNING")  # as while the main process still runs
    while mlflow.active_run() is not None:
        mlflow.end_run()
    with pytest.raises(KeyboardInterrupt), Tracker("onep", uri, parent_run_id=parent):
        mlflow.start_run(run_name="cut", nested=True, tags={PARENT_TAG: parent})
        raise KeyboardInterrupt
    runs = {r.info.run_name: r for r in runs_of(uri, "onep")}
    assert set(runs) == {"main", "a/b", "cut"}
    assert runs["a/b"].data.tags[PARENT_TAG] == parent and runs["a/b"].info.status == "FINISHED"
    assert runs["cut"].info.status == "KILLED"
    assert runs["main"].info.status == "RUNNING"  # a worker's interrupt is not the command's end
    assert mlflow.active_run() is None


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "BENCH_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1", **extra}


@pytest.mark.slow
def test_two_jobs_are_one_parent_run_with_every_cell_nested(tmp_path):
    import mlflow

    (tmp_path / "g.toml").write_text(GRID)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = ["--grid", str(tmp_path / "g.toml"), "--results-dir", str(tmp_path / "results"), "--tracking-uri", uri]
    # A worker alone, as `bench run --jobs 2` starts it: it nests under the parent it is given, ends nothing.
    client = mlflow.tracking.MlflowClient(uri)
    exp = client.create_experiment(experiment_name("onep"))
    given = client.create_run(exp, run_name="given").info.run_id
    proc = subprocess.run([sys.executable, "-m", "bench", "run", *common, "--worker", "1/2", "--jobs", "1",
                           "--no-leaderboard"],
                          cwd=tmp_path, env=_env(tmp_path, **{PARENT_RUN_ENV: given}), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    cells = [r for r in runs_of(uri, "onep") if "cell_id" in r.data.tags]
    assert len(cells) == 4 and {r.data.tags[PARENT_TAG] for r in cells} == {given}
    assert client.get_run(given).info.status == "RUNNING"
    client.set_terminated(given)

    # The whole command: one more parent run (named after the grid), all of its cells under it, and the
    # leaderboard among its artifacts (not in a top-level run of its own).
    more = GRID.replace("eps = [0.05, 0.1]", "eps = [0.05, 0.1, 0.2, 0.3]")
    (tmp_path / "g.toml").write_text(more)
    out = bench("run", *common, "--jobs", "2", cwd=tmp_path)
    assert out.returncode == 0, out.stderr + out.stdout
    assert "4 cells run (0 failed), 4 already done" in out.stdout
    runs = runs_of(uri, "onep")
    parents = [r for r in runs if PARENT_TAG not in r.data.tags and r.info.run_name != "given"]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    parent = parents[0]
    assert parent.info.run_name.startswith("onep 20") and parent.info.status == "FINISHED"
    assert parent.data.tags["jobs"] == "2"
    new = [r for r in runs if "cell_id" in r.data.tags and r.data.tags[PARENT_TAG] != given]
    assert len(new) == 4 and {r.data.tags[PARENT_TAG] for r in new} == {parent.info.run_id}
    assert not [r for r in runs if r.info.run_name.endswith(" sync")]
    assert "leaderboard/onep.md" in [a.path for a in client.list_artifacts(parent.info.run_id, "leaderboard")]
