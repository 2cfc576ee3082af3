"""``--verbose`` shows MLflow's own console lines and log messages, never a URI's password."""

from __future__ import annotations

import io
import logging
import sys
import threading
import warnings

from bench.track.tracker import MaskFilter, Tracker, mask_log_handlers

SECRET = "s3cr3t-pw"


def test_verbose_mlflow_console_lines_are_masked(capsys):
    tracker = Tracker("g", "sqlite:///unused.db", verbose=True)
    with tracker._quiet():
        print(f"View run cell at: http://u:{SECRET}@mlflow.example:5000/#/experiments/1")
    out = capsys.readouterr().out
    assert SECRET not in out and "View run cell at: http://u:***@mlflow.example:5000/#/experiments/1" in out
    with Tracker("g", "sqlite:///unused.db")._quiet():  # not verbose: nothing at all
        print("View run cell")
    assert capsys.readouterr().out == ""


def test_verbose_log_records_are_masked_and_others_untouched():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("mlflow.test_masking")
    logger.addHandler(handler)
    logger.propagate = False
    # other tests quiet MLflow's loggers (level, disabled); this one measures the filter, not them
    logger.setLevel(logging.INFO)
    logger.disabled = False
    disabled_before = logging.root.manager.disable  # an interrupt test's `logging.disable` outlives it
    logging.disable(logging.NOTSET)
    try:
        mask_log_handlers("mlflow.test_masking")
        mask_log_handlers("mlflow.test_masking")  # idempotent
        assert sum(isinstance(f, MaskFilter) for f in handler.filters) == 1
        logger.warning("retrying %s (%d)", f"postgresql://u:{SECRET}@db/mlflow", 3)
        logger.warning("plain %s", "message")
    finally:
        logger.removeHandler(handler)
        logging.disable(disabled_before)
    assert stream.getvalue().splitlines() == ["retrying postgresql://u:***@db/mlflow (3)", "plain message"]


def test_an_error_after_sigterm_is_the_signals_one_line_and_exit_130(tmp_path, monkeypatch):
    """SIGTERM inside numpy's import (a --jobs worker still starting) became an ImportError that a
    library swallowed, and a later import crashed: exit 3 and a crash report instead of 130."""
    import signal

    from bench import cli
    from bench.spec import grid
    from tests.test_cli import bench

    def load(name):
        cli._STOP["signum"] = signal.SIGTERM  # as _on_signal records it
        raise ImportError("cannot load module more than once per process")

    monkeypatch.setattr(grid, "load", load)
    # what the exit path mutes in a dying process, restored for the tests after this one
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    before = logging.root.manager.disable
    try:
        with warnings.catch_warnings():
            proc = bench("run", "--no-tracking", cwd=tmp_path)
    finally:
        logging.disable(before)
    assert proc.returncode == 130
    assert proc.stderr.splitlines() == ["terminated: finished cells are saved; rerun the same command to resume"]
