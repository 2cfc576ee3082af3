"""``bench run --jobs N``: worker processes share a grid's cells, each computed once, records as with one."""

from __future__ import annotations

import json

import pytest

from bench.core.locks import CellClaim
from bench.run.workers import parse_worker, rotate
from bench.spec import grid
from tests.test_cli import bench

GRID = """name = "jobs"
dataset = "digits"
arch = "small-cnn"
layout = "star"
base_model = "standard"
limit = 60
seed = 0
[train.standard]
epochs = 3
[train.adv-fgsm]
epochs = 3
[runtime.none]
[runtime.median]
[[attacks]]
name = "fgsm"
eps = 0.1
[[attacks]]
name = "pgd"
eps = 0.1
"""


def test_rotate_starts_each_worker_on_another_model(tmp_path):
    (tmp_path / "g.toml").write_text(GRID)
    cells = grid.load(str(tmp_path / "g.toml")).cells()
    first = [rotate(cells, rank, 2)[0] for rank in range(2)]
    assert rotate(cells, 0, 2) == cells  # worker 0 keeps the grid's order
    assert {(c.train_defense, c.runtime_defense) for c in first} == {("standard", "none"), ("adv-fgsm", "none")}
    for rank in range(3):
        assert sorted(c.cell_id for c in rotate(cells, rank, 3)) == sorted(c.cell_id for c in cells)


def test_rotate_starts_defenses_that_train_per_point_first():
    cells = grid.load("default").cells()
    for rank in range(2):
        order = [c.runtime_defense for c in rotate(cells, rank, 2)]
        heavy = sum(name in ("rmc", "rmc-plus", "ride") for name in order)
        assert set(order[:heavy]) == {"rmc", "rmc-plus", "ride"}  # every RMC / RIDE cell before the rest
    assert rotate(cells, 0, 2)[0].runtime_defense != rotate(cells, 1, 2)[0].runtime_defense


def test_a_worker_runs_other_cells_while_another_trains_their_model(tmp_path):
    """defer_busy: cells whose model another worker is training wait at the back, lazily re-checked;
    the lock test is real (cache.lock held here, probed through a second open file)."""
    from bench.core.cache import held_elsewhere, lock
    from bench.run.artifacts import ArtifactStore
    from bench.run.runner import RunOptions
    from bench.run.workers import defer_busy

    (tmp_path / "g.toml").write_text(GRID)
    cells = grid.load(str(tmp_path / "g.toml")).cells()
    spec = grid.load(str(tmp_path / "g.toml"))
    store = ArtifactStore(spec, RunOptions(cache_dir=tmp_path / "c", results_dir=tmp_path / "r", tracking=False,
                                           device="cpu", progress=False, log_samples=False), None)
    adv = next(c for c in cells if c.train_defense == "adv-fgsm")
    path = tmp_path / "c" / "models" / f"{store.model_key(adv.arch, 'adv-fgsm', adv.train_params, adv.seed)}.pt"
    assert not store.model_busy(adv) and not held_elsewhere(path)
    with lock(path):  # another worker training adv-fgsm
        assert store.model_busy(adv) and held_elsewhere(path)
        assert not store.model_busy(next(c for c in cells if c.train_defense == "standard"))
        lazy = defer_busy(cells, store.model_busy)
        ahead = [next(lazy) for _ in range(sum(c.train_defense == "standard" for c in cells))]
        assert all(c.train_defense == "standard" for c in ahead)  # every standard cell before any adv-fgsm one
    assert [c.cell_id for c in lazy] == [c.cell_id for c in cells if c.train_defense == "adv-fgsm"]
    assert not held_elsewhere(path)
    # still busy when only it is left: yielded anyway (its cache lock then waits, as before)
    assert list(defer_busy(["x", "a", "b"], lambda c: c == "x")) == ["a", "b", "x"]


@pytest.mark.parametrize("text", ["2/2", "x", "1/0", "-1/2"])
def test_bad_worker_option(text):
    with pytest.raises(Exception, match="--worker"):
        parse_worker(text)


@pytest.mark.parametrize("jobs", ["0", "many"])
def test_bad_jobs_is_one_line(tmp_path, jobs):
    proc = bench("run", "--jobs", jobs, "--dry-run", cwd=tmp_path)
    assert proc.returncode == 2
    assert "--jobs must be a positive number or auto" in proc.stderr and "Traceback" not in proc.stderr


def _records(path):
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["cell_id"]: r for r in lines}, len(lines)


@pytest.mark.slow
def test_two_jobs_compute_every_cell_once_as_one_job_does(tmp_path):
    (tmp_path / "g.toml").write_text(GRID)
    runs = {}
    for jobs in ("1", "2"):
        out = tmp_path / f"j{jobs}"
        proc = bench("run", "--grid", str(tmp_path / "g.toml"), "--results-dir", str(out / "results"),
                     "--cache-dir", str(out / "cache"), "--no-tracking", "--jobs", jobs, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr + proc.stdout
        runs[jobs] = proc.stdout, *_records(out / "results" / "jobs.jsonl")
    out2, recs2, lines2 = runs["2"]
    _, recs1, _ = runs["1"]
    assert "6 cells on 2 processes" in out2 and "6 cells run (0 failed)" in out2
    # Both processes ran to the end; how the 6 cells split depends on the machine's load.
    by_process = next(line for line in out2.splitlines() if line.startswith("cells by process: "))
    assert sum(int(part.split(": ")[1]) for part in by_process[18:].split(", ")) == 6
    assert lines2 == len(recs2) == len(recs1) == 6  # one record per cell: none computed twice
    for cid, rec in recs1.items():
        other = recs2[cid]
        assert other["status"] == rec["status"] == "ok"
        assert (other["clean_per_example"], other["per_example"]) == (rec["clean_per_example"], rec["per_example"])
    # a local run's board goes under its results folder, never to the published leaderboards/
    assert (tmp_path / "j2" / "results" / "leaderboards" / "jobs.md").is_file()
    assert not (tmp_path / "leaderboards").exists()
    for cid in recs2:  # every claim released: this process can take each one
        claim = CellClaim(tmp_path / "j2" / "results", "jobs", cid)
        assert claim.acquire()
        claim.release()


def test_a_crashed_worker_is_an_error_line_and_exit_1_not_a_failed_cell(tmp_path, monkeypatch):
    """Worker 1 dies at once (exit 3): worker 0 runs every cell, the summary counts no failed cell,
    one line names the worker, and the exit code is 1."""
    import sys

    from bench.run import workers

    monkeypatch.setattr(workers, "child_args", lambda ctx, rank, n: [sys.executable, "-c", "raise SystemExit(3)"])
    (tmp_path / "g.toml").write_text(GRID.replace("limit = 60", "limit = 20").replace("epochs = 3", "epochs = 1"))
    proc = bench("run", "--grid", str(tmp_path / "g.toml"), "--results-dir", str(tmp_path / "results"),
                 "--no-tracking", "--no-leaderboard", "--jobs", "2", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr + proc.stdout
    assert "6 cells run (0 failed)" in proc.stdout
    assert "error: worker 1 exited with code 3" in proc.stderr and "cell(s) failed" not in proc.stderr
