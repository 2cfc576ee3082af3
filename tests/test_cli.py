"""The command line: bad input gets one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.cli import main

REPO = Path(__file__).resolve().parents[1]


def bench_subprocess(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m bench ...`` in a fresh process: the real entry point, imports and all."""
    full_env = {**os.environ, "BENCH_CACHE_DIR": str(cwd / "cache"), **(env or {})}
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd, capture_output=True, text=True,
                          env=full_env, timeout=300)


def bench(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """``bench ...`` in this (warm) process through the entry point ``bench.cli.main``, with click's
    CliRunner isolation for stdout / stderr / environment: a subprocess per call re-imports torch and
    MLflow (seconds each). An exception main() does not handle becomes exit 1 with its traceback on
    stderr, as in a real process."""
    runner = CliRunner()
    old_cwd, old_argv, code = os.getcwd(), sys.argv, 0
    with runner.isolation(env={"BENCH_CACHE_DIR": str(cwd / "cache"), **(env or {})}) as streams:
        os.chdir(cwd)
        sys.argv = ["bench", *args]
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except Exception:
            code = 1
            sys.stderr.write(traceback.format_exc())
        finally:
            os.chdir(old_cwd)
            sys.argv = old_argv
        sys.stdout.flush()
        sys.stderr.flush()
        out, err = streams[0].getvalue().decode(), streams[1].getvalue().decode()
    return subprocess.CompletedProcess(list(args), code, out, err)


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


def test_the_real_entry_point_in_a_subprocess(tmp_path):
    # Everything else here runs in-process; this one proves the installed entry point behaves the same.
    proc = bench_subprocess("run", "--grid", "nosuchgrid", cwd=tmp_path)
    assert proc.returncode == 2 and "unknown grid" in proc.stderr and "Traceback" not in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.strip()]) == 1


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


@pytest.mark.slow
def test_tracking_server_unreachable(tmp_path):
    proc = bench("run", "--grid", "ci", "--tracking-uri", "http://127.0.0.1:9", "--limit", "5", cwd=tmp_path)
    assert proc.returncode == 2 and "MLflow" in proc.stderr and "Traceback" not in proc.stderr
