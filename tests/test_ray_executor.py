"""The Ray executor on a local cluster gives the same records as the local executor."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
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



# -- Ray clusters that lie around. Each test gives Ray a private temp dir (RAY_TMPDIR: where Ray keeps its
# sessions and the ray_current_cluster record), short because Ray's Unix socket paths must stay under 108
# characters, and stops what it started by killing the process groups of its `ray start` commands:
# `ray stop` would stop every Ray on the machine, other users' included.
RAY_CLI = str(Path(sys.executable).with_name("ray"))


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _bench(*args: str, env: dict[str, str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def _nodes_that_ran_cells(ray_dir: Path) -> set[str]:
    """Node ids of the Ray workers that ran a cell: worker-<id>-<job>-<pid>.out names the tasks a worker
    ran, python-core-worker-<id>_<pid>.log its node."""
    logs = ray_dir / "session_latest" / "logs"
    workers = {f.name.split("-")[1] for f in logs.glob("worker-*.out") if "run_cell_task" in f.read_text()}
    return {m.group(1) for w in workers for f in logs.glob(f"python-core-worker-{w}_*.log")
            if (m := re.search(r"node_id=([0-9a-f]+)", f.read_text()))}


@pytest.fixture
def private_ray_tmp():
    root = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_stale_cluster_record_does_not_stop_a_local_run(private_ray_tmp, tmp_path):
    """A `ray start` that died leaves its address in ray_current_cluster; a plain ray.init() would join
    that dead cluster and hang (killed after 150 s, no cell run). The run starts its own cluster instead."""
    (private_ray_tmp / "ray").mkdir()
    stale = private_ray_tmp / "ray" / "ray_current_cluster"
    stale.write_text(f"127.0.0.1:{_free_ports(1)[0]}")
    (tmp_path / "g.toml").write_text(GRID)
    start = time.monotonic()
    done = _bench("run", "--grid", "g.toml", "--executor", "ray", "--no-tracking", "--no-leaderboard", env=_clean_env(
        RAY_TMPDIR=str(private_ray_tmp)), cwd=tmp_path, timeout=150)
    seconds = time.monotonic() - start
    assert done.returncode == 0, done.stderr[-2000:]
    assert len((tmp_path / "results" / "rayg.jsonl").read_text().splitlines()) == 4
    assert seconds < 90, f"took {seconds:.0f} s"
    assert done.stderr.strip() == "", done.stderr[-2000:]  # no Ray warnings either


@pytest.fixture(scope="class")
def token_cluster():
    """docs/scale-and-index.md's recipe (Ray 2.60 turns token authentication on): a head and a second node started with
    `ray start`, here on one machine, so each node also gets its own ports and the nodes their own HOME
    (where Ray keeps ~/.ray/auth_token): the second node and the driver get the token through RAY_AUTH_TOKEN."""
    root = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    homes = {name: root / name for name in ("head", "other", "empty")}
    for home in homes.values():
        home.mkdir()
    groups: list[int] = []

    def ray_cli(*args: str, env: dict[str, str]) -> str:
        proc = subprocess.Popen([RAY_CLI, *args], env=env, start_new_session=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        groups.append(proc.pid)  # its own process group: the node's daemons stay in it
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, (args, err[-3000:])
        return out.strip()

    port, client, dash, *agents = _free_ports(11)
    head_env = _clean_env(RAY_TMPDIR=str(root), HOME=str(homes["head"]), RAY_AUTH_MODE="token")
    try:
        token = ray_cli("get-auth-token", "--generate", env=head_env)
        ray_cli("start", "--head", "--port", str(port), "--include-dashboard=false", "--num-cpus=1",
                "--disable-usage-stats", f"--ray-client-server-port={client}", f"--dashboard-port={dash}",
                f"--dashboard-agent-listen-port={agents[0]}", f"--dashboard-agent-grpc-port={agents[1]}",
                f"--runtime-env-agent-port={agents[2]}", f"--metrics-export-port={agents[3]}", env=head_env)
        other_env = _clean_env(RAY_TMPDIR=str(root), HOME=str(homes["other"]), RAY_AUTH_MODE="token",
                               RAY_AUTH_TOKEN=token)
        ray_cli("start", "--address", f"127.0.0.1:{port}", "--num-cpus=1", "--disable-usage-stats",
                f"--dashboard-agent-listen-port={agents[4]}", f"--dashboard-agent-grpc-port={agents[5]}",
                f"--runtime-env-agent-port={agents[6]}", f"--metrics-export-port={agents[7]}", env=other_env)
        yield {"address": f"127.0.0.1:{port}", "root": root, "homes": homes, "token": token,
               "driver_env": other_env}
    finally:
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)


class TestTokenCluster:  # the cluster lives while this class's tests run
    @pytest.mark.slow
    def test_the_ci_grid_runs_on_both_nodes(self, token_cluster, tmp_path):
        cl = token_cluster
        done = _bench("run", "--grid", "ci", "--executor", "ray", "--ray-address", cl["address"], "--no-tracking",
                      "--no-leaderboard", "--cache-dir", str(tmp_path / "cache"), "--results-dir",
                      str(tmp_path / "results"), env=cl["driver_env"], cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stderr.strip() == "", done.stderr[-2000:]
        records = [json.loads(line) for line in (tmp_path / "results" / "ci.jsonl").read_text().splitlines()]
        assert sorted(r["cell_id"] for r in records) == sorted(c.cell_id for c in grid.load("ci").cells())
        assert {r["status"] for r in records} == {"ok"}
        assert len(_nodes_that_ran_cells(cl["root"] / "ray")) == 2

    @pytest.mark.slow
    def test_the_token_is_used_when_at_hand_else_one_line_says_what_to_set(self, token_cluster, tmp_path):
        cl = token_cluster

        def join(home: str, **env: str) -> str:
            code = ("import os\nfrom bench.core.errors import BenchError\n"
                    "from bench.run.executors import join_address\n"
                    f"try: print(join_address({cl['address']!r}), os.environ.get('RAY_AUTH_MODE'))\n"
                    "except BenchError as exc: print(exc)")
            env = _clean_env(RAY_TMPDIR=str(cl["root"]), HOME=str(cl["homes"][home]), **env)
            return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                  timeout=120).stdout.strip()

        port = cl["address"].rsplit(":", 1)[1]
        assert join("head").endswith(f":{port} token")  # ~/.ray/auth_token there, RAY_AUTH_MODE unset
        assert join("empty", RAY_AUTH_TOKEN=cl["token"]).endswith(f":{port} token")
        assert "asks for an auth token but RAY_AUTH_MODE=disabled: export RAY_AUTH_MODE=token" in join(
            "head", RAY_AUTH_MODE="disabled")
        assert "refused this machine's auth token: export RAY_AUTH_TOKEN=" in join("empty", RAY_AUTH_TOKEN="wrong")
        assert "RAY_AUTH_MODE=token but there is no auth token here" in join("empty", RAY_AUTH_MODE="token")
        # and through the CLI, with no token anywhere: exit 2, one line, no Ray warnings
        done = _bench("run", "--grid", "ci", "--executor", "ray", "--ray-address", cl["address"], "--no-tracking",
                      env=_clean_env(RAY_TMPDIR=str(cl["root"]), HOME=str(cl["homes"]["empty"])), cwd=tmp_path,
                      timeout=120)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, done.stderr[-2000:]
        assert "asks for an auth token and none is set here: export RAY_AUTH_MODE=token and RAY_AUTH_TOKEN=" in lines[0]


@pytest.fixture(scope="module")
def local_cluster():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
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
    exp = client.get_experiment_by_name("advbench/rayg")
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
        class exceptions:  # what init_ray turns into one line; Started is none of them
            RayError = RuntimeError

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
