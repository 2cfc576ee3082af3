"""A crash (a bug, not bad input) is one line naming its traceback's file and exit code 3; a tracking
URI's password appears in no message and on no worker's command line."""

from __future__ import annotations

import tempfile

import pytest

from bench.core.errors import BenchError, mask_secrets
from bench.track.tracker import Tracker
from tests.test_extension_api import run_cli

SECRET = "s3cr3t-pa55"


def test_a_crash_is_one_line_naming_the_traceback_file_and_exit_3(tmp_path, monkeypatch, capsys):
    from bench.spec import grid as grids

    def broken(name):
        raise ZeroDivisionError(f"a bug near postgresql://u:{SECRET}@db/mlflow")

    monkeypatch.setattr(grids, "load", broken)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    code, _, err = run_cli("run", "--grid", "default", "--tracking-uri", f"http://u:{SECRET}@host:5000",
                           capsys=capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 3 and len(lines) == 1, err
    assert lines[0].startswith("error: internal error (ZeroDivisionError: a bug near postgresql://u:***@db/mlflow)")
    logs = list(tmp_path.glob("bench-crash-*.log"))
    assert len(logs) == 1 and str(logs[0]) in lines[0]
    text = logs[0].read_text()
    assert "Traceback (most recent call last)" in text and "in broken" in text and "ZeroDivisionError" in text
    assert "--tracking-uri http://u:***@host:5000" in text and SECRET not in text + err


def test_bad_input_stays_one_line_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    code, _, err = run_cli("run", "--grid", "no-such-grid", capsys=capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "unknown grid" in err, err
    assert not list(tmp_path.glob("bench-crash-*"))


@pytest.mark.parametrize("text,masked", [
    ("http://user:secret@host:5000", "http://user:***@host:5000"),
    ("store postgresql://u:se:c/ret@h/db failed (x@y)", "store postgresql://u:***@h/db failed (x@y)"),
    ("sqlite:///mlflow.db, http://host:5000/x, file:///a@b", "sqlite:///mlflow.db, http://host:5000/x, file:///a@b"),
])
def test_mask_secrets(text, masked):
    assert mask_secrets(text) == masked
    assert str(BenchError(f"store {text} is unusable")) == f"store {masked} is unusable"


def test_tracker_warnings_mask_the_password():
    said: list[str] = []
    tracker = Tracker("g", f"http://u:{SECRET}@127.0.0.1:9", warn=said.append)
    tracker._degrade(RuntimeError(f"API request to http://u:{SECRET}@127.0.0.1:9/api/2.0/runs failed " + "x" * 200))
    assert len(said) == 1 and "http://u:***@127.0.0.1:9" in said[0] and SECRET not in said[0]


def test_workers_get_the_tracking_uri_in_their_environment_not_their_command_line():
    from bench.cli import run
    from bench.run.workers import child_args, child_env

    uri = f"postgresql://u:{SECRET}@db.example/mlflow"
    ctx = run.make_context("run", ["--grid", "default", "--tracking-uri", uri, "--jobs", "2", "--no-tracking"])
    args = child_args(ctx, 1, 2)
    assert SECRET not in " ".join(args) and "--tracking-uri" not in args and "--no-tracking" in args
    assert child_env(ctx) == {"MLFLOW_TRACKING_URI": uri}
    assert child_env(run.make_context("run", ["--jobs", "2"])) == {}


@pytest.mark.slow
def test_a_jobs_run_shows_the_password_nowhere(tmp_path, monkeypatch, capsys):
    """An unreachable password-protected server: the parent's line masks it."""
    import subprocess

    from bench.run import workers
    from tests.test_faults import free_port

    started: list[tuple[list[str], dict[str, str]]] = []
    popen = subprocess.Popen

    def recording(cmd, *args, **kw):  # subprocess.Popen everywhere: keep the workers'
        if "--worker" in cmd:
            started.append((cmd, kw["env"]))
        return popen(cmd, *args, **kw)

    monkeypatch.setattr(workers.subprocess, "Popen", recording)
    uri = f"http://bench:{SECRET}@127.0.0.1:{free_port()}"
    (tmp_path / "g.toml").write_text('name = "s"\ndataset = "digits"\narch = "small-cnn"\nlimit = 8\n'
                                     'train_limit = 100\n[train.standard]\nepochs = 1\n[runtime.none]\n'
                                     '[[attacks]]\nname = "fgsm"\neps = [0.05, 0.1]\n')
    monkeypatch.setenv("BENCH_TRACKING_RETRY_S", "0")
    code, out, err = run_cli("run", "--grid", str(tmp_path / "g.toml"), "--results-dir", str(tmp_path / "r"),
                             "--cache-dir", str(tmp_path / "c"), "--tracking-uri", uri, "--jobs", "2",
                             capsys=capsys)
    assert code == 2 and "bench:***@127.0.0.1" in err, err
    assert SECRET not in out + err
    # The parent opens the command's MLflow parent run before it starts a worker: an unusable store is
    # its one line, and no worker starts (test_workers_get_the_tracking_uri_in_their_environment_not_...
    # covers a worker's command line and environment).
    assert started == []
