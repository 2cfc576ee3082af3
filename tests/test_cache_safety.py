"""`bench cache` on folders it did not make: refused without CACHEDIR.TAG, and only advbench's entries
are ever removed (issue 30, "Safe with untrusted files and careless input")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.core import cache
from tests.test_bad_input import grid_file, one_line_exit_2
from tests.test_cli import REPO, bench

KEY = "0123456789abcdef"


def ordinary_folder(root: Path) -> list[Path]:
    """A folder of someone's files, some named like cache entries; returns every file in it."""
    (root / "models").mkdir(parents=True)
    for name in ("notes.txt", f"models/{KEY}.pt", f"models/{KEY}.pt.sha256", ".x.tmp"):
        (root / name).write_text("mine")
    return sorted(p for p in root.rglob("*") if p.is_file())


def real_cache(root: Path) -> list[Path]:
    """A marked cache with entries written through the cache API; returns the entries' payloads."""
    assert cache.mark_cache(root)
    payloads = [root / kind / f"{KEY}.pt" for kind in ("models", "adv", "clean", "databases")]
    for p in payloads:
        cache.atomic_torch_save(torch.zeros(3), p)
    with cache.lock(root / "models" / f"{KEY}.pt"):
        pass  # leaves models/<key>.pt.lock, as a run does
    (root / "training" / KEY).mkdir(parents=True)
    (root / "training" / KEY / "train_state.pt").write_bytes(b"state")
    return payloads


def plant_foreign(root: Path) -> list[Path]:
    """Files a person put into a cache folder: at the top, in kind folders, named almost like entries."""
    files = [root / "README.txt", root / "models" / "my-model.pt", root / "adv" / f"{KEY}.pt.bak",
             root / "training" / "notes.md", root / "elsewhere" / f"{KEY}.pt"]
    for p in files:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("keep me")
    return files


@pytest.mark.parametrize("args", [["ls"], ["du"], ["gc"], ["gc", "--all", "--yes"], ["gc", "--older-than", "0"]])
def test_an_unmarked_folder_is_refused_and_left_alone(tmp_path, args):
    folder = tmp_path / "docs"
    before = ordinary_folder(folder)
    proc = bench("cache", *args, "--cache-dir", str(folder), cwd=tmp_path)
    one_line_exit_2(proc, f"{folder} is not an advbench cache (no CACHEDIR.TAG)")
    assert sorted(p for p in folder.rglob("*") if p.is_file()) == before and proc.stdout == ""


def test_gc_all_removes_only_advbench_entries(tmp_path):
    root = tmp_path / "cache"
    payloads = real_cache(root)
    keep = plant_foreign(root)
    listed = bench("cache", "ls", "--cache-dir", str(root), cwd=tmp_path)
    assert listed.returncode == 0 and all(str(p) not in listed.stdout for p in keep)
    assert "6 entries" in listed.stderr  # four payloads, one lock, one training folder

    refused = bench("cache", "gc", "--all", "--cache-dir", str(root), cwd=tmp_path)  # stdin is not a terminal
    one_line_exit_2(refused, "pass --yes")
    assert all(p.is_file() for p in payloads)

    proc = bench("cache", "gc", "--all", "--yes", "--cache-dir", str(root), cwd=tmp_path)
    assert proc.returncode == 0 and "6 entries" in proc.stdout, proc.stderr
    assert not any(p.exists() or cache.checksum_path(p).exists() for p in payloads)
    assert not (root / "training" / KEY).exists() and not (root / "models" / f"{KEY}.pt.lock").exists()
    assert all(p.read_text() == "keep me" for p in keep) and cache.is_marked(root)


def test_gc_all_with_stdin_closed_refuses(tmp_path):
    root = tmp_path / "cache"
    payloads = real_cache(root)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(["sh", "-c", 'exec "$0" -m bench cache gc --all --cache-dir "$1" <&-', sys.executable,
                           str(root)], capture_output=True, text=True, env=env, timeout=120)
    one_line_exit_2(proc, "no terminal to confirm on; pass --yes")
    assert all(p.is_file() for p in payloads)


def test_mark_cache_marks_new_and_older_caches_but_not_other_folders(tmp_path):
    new = tmp_path / "new" / "cache"
    assert cache.mark_cache(new) and (new / cache.TAG_NAME).read_text().startswith(
        "Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag created by advbench")
    older = tmp_path / "older"
    real_cache(older)
    (older / cache.TAG_NAME).unlink()  # as an older advbench left it
    (older / "benchmark-models").mkdir()  # python -m bench.benchmarks.rmc_floor's, not `bench cache`'s
    (older / "benchmark-models" / "digits-small-cnn-standard.pt").write_text("weights")
    assert not cache.is_marked(older) and cache.mark_cache(older) and cache.is_marked(older)
    assert {e.kind for e in cache.scan(older)} == {"models", "adv", "clean", "databases", "training"}
    mixed = tmp_path / "mixed"
    real_cache(mixed)
    (mixed / cache.TAG_NAME).unlink()
    (mixed / "models" / "thesis.pt").write_text("mine")
    assert not cache.mark_cache(mixed) and not (mixed / cache.TAG_NAME).exists()


def test_a_fresh_run_creates_the_tag(tmp_path):
    proc = bench("run", "--grid", grid_file(tmp_path), "--no-tracking", "--no-leaderboard", "--limit", "4",
                 "--cache-dir", str(tmp_path / "c"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert cache.is_marked(tmp_path / "c") and list((tmp_path / "c" / "models").glob("*.pt"))
    listed = bench("cache", "ls", "--cache-dir", str(tmp_path / "c"), cwd=tmp_path)
    assert listed.returncode == 0 and "models" in listed.stdout
