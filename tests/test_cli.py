"""The command line: bad input gets one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def bench(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "BENCH_CACHE_DIR": str(cwd / "cache"), **(env or {})}
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd, capture_output=True, text=True,
                          env=full_env, timeout=300)


@pytest.mark.parametrize("args,needle", [
    (["run", "--grid", "nosuchgrid"], "unknown grid"),
    (["run", "--grid", "does/not/exist.toml"], "not found"),
    (["run", "--limit", "-3", "--dry-run"], "--limit"),
    (["run", "--device", "cuda:7", "--no-tracking"], "CUDA"),
    (["check", "--grid", "ci", "--baseline", "nope.json"], "no results"),
])
def test_bad_input_one_line_exit_2(tmp_path, args, needle):
    proc = bench(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr


def test_malformed_toml_and_missing_data(tmp_path):
    (tmp_path / "bad.toml").write_text("name = [\n")
    proc = bench("run", "--grid", str(tmp_path / "bad.toml"), cwd=tmp_path)
    assert proc.returncode == 2 and "malformed grid file" in proc.stderr and "Traceback" not in proc.stderr
    (tmp_path / "mn.toml").write_text('dataset = "mnist"\narch = "small-cnn"\n[[attacks]]\nname = "fgsm"\neps = 0.3\n')
    proc = bench("run", "--grid", str(tmp_path / "mn.toml"), "--no-tracking", "--data-dir", str(tmp_path / "empty"),
                 cwd=tmp_path)
    assert proc.returncode == 2 and "t10k-images-idx3-ubyte.gz" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "results" / "mn.jsonl").exists()


def test_list_and_dry_run(tmp_path):
    proc = bench("list", "attacks", cwd=tmp_path)
    assert proc.returncode == 0 and "pgd" in proc.stdout
    # The dry run runs the preflight: without CIFAR-10's files it says which to put where ...
    proc = bench("run", "--grid", "cifar10", "--dry-run", "--data-dir", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2 and "cifar10 test files not found" in proc.stderr
    # ... and with seeded stand-ins it lists the cells.
    proc = bench("run", "--grid", "cifar10", "--dry-run", "--synthetic", "--data-dir", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0 and "cells" in proc.stdout and "preflight ok" in proc.stdout
    assert not (tmp_path / "results").exists()


def test_tracking_server_unreachable(tmp_path):
    proc = bench("run", "--grid", "ci", "--tracking-uri", "http://127.0.0.1:9", "--limit", "5", cwd=tmp_path)
    assert proc.returncode == 2 and "MLflow" in proc.stderr and "Traceback" not in proc.stderr
