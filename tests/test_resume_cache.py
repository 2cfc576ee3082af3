"""Resume and the content-addressed cache: SIGKILL mid-grid, corrupt entries, `bench cache`, reruns."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench.core import cache
from bench.core.contracts import Attack
from bench.run.artifacts import ArtifactStore
from bench.run.runner import Runner, RunOptions
from bench.spec import grid
from bench.track.results import MEASUREMENT_FIELDS

GRID = """
name = "rz"
dataset = "digits"
arch = "small-cnn"
limit = 30
train_limit = 300
seed = 0
[train.standard]
epochs = 2
[runtime.none]
[[attacks]]
name = "fgsm"
eps = 0.1
[[attacks]]
name = "pgd"
eps = [0.02, 0.05, 0.1, 0.2, 0.3]
params = { steps = 5 }
"""
N_CELLS = 6
TIMING = MEASUREMENT_FIELDS


def bench_cmd(folder: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bench", "run", "--grid", str(folder / "rz.toml"),
            "--results-dir", str(folder / "results"), "--cache-dir", str(folder / "cache"),
            "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}", "--no-leaderboard", *extra]


def records(folder: Path) -> dict[str, dict]:
    path = folder / "results" / "rz.jsonl"
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)  # a half record would raise here
        assert rec["cell_id"] not in out, "duplicate record"
        out[rec["cell_id"]] = rec
    return out


def comparable(recs: dict[str, dict]) -> dict[str, dict]:
    return {k: {f: v for f, v in r.items() if f not in TIMING} for k, r in recs.items()}


def mlflow_cell_runs(folder: Path) -> list[str]:
    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    exp = client.get_experiment_by_name("advbench/rz")
    return [r.data.tags["cell_id"] for r in client.search_runs([exp.experiment_id]) if "cell_id" in r.data.tags]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The grid run once, uninterrupted."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    (folder / "rz.toml").write_text(GRID)
    proc = subprocess.run(bench_cmd(folder), capture_output=True, text=True, timeout=300, cwd=folder)
    assert proc.returncode == 0, proc.stderr
    return folder


@pytest.mark.slow
def test_sigkill_mid_grid_then_rerun_equals_uninterrupted(reference, tmp_path):
    (tmp_path / "rz.toml").write_text(GRID)
    proc = subprocess.Popen(bench_cmd(tmp_path), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not records(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    at_kill = records(tmp_path)
    assert 1 <= len(at_kill) < N_CELLS, f"kill landed outside the grid ({len(at_kill)} records)"

    rerun = subprocess.run(bench_cmd(tmp_path), capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    final = records(tmp_path)
    assert comparable(final) == comparable(records(reference))
    # No finished cell ran again: its record (timing and finish time included) is untouched, and the
    # rerun ran exactly the cells that had no record.
    for cid, rec in at_kill.items():
        assert {k: v for k, v in final[cid].items() if k != "flags"} == {k: v for k, v in rec.items() if k != "flags"}
    assert f"{N_CELLS - len(at_kill)} cells run (0 failed), {len(at_kill)} already done" in rerun.stdout
    runs = mlflow_cell_runs(tmp_path)
    assert sorted(runs) == sorted(final), "MLflow must hold exactly one run per finished cell"


@pytest.mark.slow
def test_second_run_is_fast_and_light(reference):
    """A finished grid is answered from results/<grid>.jsonl alone: no torch, data, models or MLflow."""
    code = ("import sys; from bench.cli import cli; cli.main(sys.argv[1:], standalone_mode=False); "
            "print('HEAVY', sorted(m for m in ('torch', 'mlflow', 'attacks', 'sklearn') if m in sys.modules))")
    before = (reference / "results" / "rz.jsonl").read_text()
    proc = subprocess.run([sys.executable, "-c", code, *bench_cmd(reference)[3:]], capture_output=True, text=True,
                          timeout=60, cwd=reference)
    assert proc.returncode == 0, proc.stderr
    assert "nothing to do: all 6 cells already finished" in proc.stdout
    assert "HEAVY []" in proc.stdout
    assert (reference / "results" / "rz.jsonl").read_text() == before
    assert len(mlflow_cell_runs(reference)) == N_CELLS


@pytest.mark.slow
def test_adding_a_runtime_defense_runs_only_its_cells(reference, monkeypatch):
    spec_text = GRID.replace("[runtime.none]", "[runtime.none]\n[runtime.median]")
    (reference / "rz2.toml").write_text(spec_text)
    spec = grid.load(str(reference / "rz2.toml"))
    adv_before = sorted((reference / "cache" / "adv").glob("*.pt"))
    monkeypatch.setattr(ArtifactStore, "train", lambda *a, **k: pytest.fail("retrained a cached model"))
    monkeypatch.setattr(Attack, "__call__", lambda *a, **k: pytest.fail("crafted adversarial examples again"))
    opts = RunOptions(cache_dir=reference / "cache", results_dir=reference / "results2", tracking=False,
                      progress=False)
    (reference / "results2").mkdir(exist_ok=True)
    (reference / "results2" / "rz.jsonl").write_text((reference / "results" / "rz.jsonl").read_text())
    summary = Runner(spec, opts).run()
    assert summary.skipped_done == N_CELLS and summary.ran == N_CELLS and summary.failed == 0
    assert sorted((reference / "cache" / "adv").glob("*.pt")) == adv_before  # one adv set serves both defenses


def test_corrupt_or_partial_entry_is_detected_and_rebuilt(tmp_path, capsys):
    path = tmp_path / "models" / "k.pt"
    cache.atomic_torch_save({"w": torch.arange(100.0)}, path)
    assert cache.entry_status(path) == "ok" and torch.equal(cache.torch_load_or_none(path)["w"], torch.arange(100.0))
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    assert cache.entry_status(path) == "corrupt"
    assert cache.torch_load_or_none(path) is None and not path.exists()
    assert "corrupt (checksum mismatch)" in capsys.readouterr().err
    cache.atomic_torch_save({"w": torch.ones(3)}, path)
    cache.checksum_path(path).unlink()  # killed between payload and checksum
    assert cache.torch_load_or_none(path) is None
    assert "partial" in capsys.readouterr().err


@pytest.mark.slow
def test_corrupt_cached_model_is_rebuilt_by_the_runner(reference, tmp_path):
    """A grid whose cached model was damaged retrains it and gets the same records."""
    import shutil

    shutil.copytree(reference / "cache", tmp_path / "cache")
    (tmp_path / "rz.toml").write_text(GRID.replace('eps = [0.02, 0.05, 0.1, 0.2, 0.3]', "eps = 0.1"))
    (model_path,) = (tmp_path / "cache" / "models").glob("*.pt")
    model_path.write_bytes(model_path.read_bytes()[:1000])  # truncated
    for p in (tmp_path / "cache" / "adv").glob("*.pt"):
        p.write_bytes(b"garbage")
    before = cache.REBUILDS["count"]
    spec = grid.load(str(tmp_path / "rz.toml"))
    trained = []
    orig = ArtifactStore.train
    opts = RunOptions(cache_dir=tmp_path / "cache", results_dir=tmp_path / "results", tracking=False, progress=False)
    runner = Runner(spec, opts)
    runner.artifacts.train = lambda *a, **k: trained.append(1) or orig(runner.artifacts, *a, **k)
    assert runner.run().failed == 0
    assert trained == [1] and cache.REBUILDS["count"] - before >= 3
    assert cache.entry_status(model_path) == "ok"
    ref = comparable(records(reference))
    for cid, rec in comparable(records(tmp_path)).items():
        assert rec == ref[cid]


@pytest.mark.slow
def test_cache_cli_ls_du_gc(reference, tmp_path, capsys):
    import shutil

    from tests.test_extension_api import run_cli

    c = tmp_path / "cache"
    shutil.copytree(reference / "cache", c)
    leftover = c / "adv" / ".0123456789abcdef.pt.k3x9_q1z.tmp"  # named as _atomic_write names them
    leftover.write_bytes(b"leftover")
    (c / "adv" / "fedcba9876543210.pt.sha256").write_text("0" * 64)
    bad = sorted((c / "adv").glob("*.pt"))[0]
    blob = bytearray(bad.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    bad.write_bytes(bytes(blob))

    def run(*args: str) -> subprocess.CompletedProcess:
        """``bench cache ARGS`` in this warm process (a subprocess per call re-imports torch)."""
        code, out, err = run_cli("cache", *args, "--cache-dir", str(c), capsys=capsys)
        return subprocess.CompletedProcess(args, code, out, err)

    ls = run("ls", "--verify")
    assert ls.returncode == 0 and "corrupt" in ls.stdout and "temp" in ls.stdout and "orphan" in ls.stdout
    assert "models" in run("du").stdout
    dry = run("gc", "--dry-run")
    assert dry.returncode == 0 and "3 entries" in dry.stdout and bad.exists()
    gc = run("gc")
    assert gc.returncode == 0 and not bad.exists() and not leftover.exists()
    assert all(e.status == "ok" for e in cache.scan(c, verify=True) if e.status not in ("lock", "dir"))
    old = time.time() - 10 * 86400
    for p in (c / "models").iterdir():
        os.utime(p, (old, old))
    run("gc", "--older-than", "5")
    assert not list((c / "models").glob("*.pt")) and list((c / "adv").glob("*.pt"))
    run("gc", "--all", "--yes")
    assert cache.scan(c) == []


def test_atomic_writes_follow_the_umask_not_mkstemps_0600(tmp_path):
    import os

    from bench.core.cache import atomic_write_text

    path = tmp_path / "shared.jsonl"
    atomic_write_text(path, "{}\n")
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
