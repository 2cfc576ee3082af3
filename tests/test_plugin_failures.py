"""An installed plugin that fails to import is one warning line and breaks no command that does not
need it; a grid that names one of its methods gets the usual line for an unregistered name."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from bench.core import entrypoints
from bench.core.errors import BenchError
from bench.core.methods import DEFENSES

REPO = Path(__file__).resolve().parents[1]

# A distribution as pip installs it: dist-info with entry points, and a package whose import fails
# (it needs a module this machine lacks) after registering one defense.
ENTRY_POINTS = "[advbench.defenses]\nbroken-def = broken_plugin\n"
BROKEN_PY = """
from defenses import RuntimeDefense, register

@register("half-registered")
class Half(RuntimeDefense):
    def predict(self, x):
        return x

import no_such_dependency_anywhere  # noqa: E402,F401
"""
GRID = """
name = "pf"
dataset = "digits"
arch = "small-cnn"
limit = 8
train_limit = 100
seed = 0
[train.standard]
epochs = 1
[runtime.{runtime}]
[[attacks]]
name = "fgsm"
eps = [0.05, 0.1]
"""


def broken(group: str) -> list[EntryPoint]:
    return [EntryPoint("broken-def", "broken_plugin", group)] if group == "advbench.defenses" else []


def test_an_entry_point_that_fails_to_import_is_a_warning_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    before = DEFENSES.list_names()  # the built-in defenses, imported before the broken plugin appears
    (tmp_path / "broken_plugin.py").write_text(BROKEN_PY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(entrypoints, "_entry_points", broken)
    monkeypatch.delenv(entrypoints.QUIET_ENV, raising=False)
    entrypoints.load_entry_points("advbench.defenses", DEFENSES)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("warning: plugin broken_plugin: entry point broken-def") and \
        "failed to import (ModuleNotFoundError: No module named 'no_such_dependency_anywhere')" in err[0], err
    assert DEFENSES.list_names() == before  # what it registered before failing is gone
    with pytest.raises(BenchError, match="unknown defense 'half-registered'"):
        DEFENSES.get("half-registered")
    monkeypatch.setenv(entrypoints.QUIET_ENV, "1")  # a --jobs worker: its parent said it
    entrypoints.load_entry_points("advbench.defenses", DEFENSES)
    assert capsys.readouterr().err == ""


def installed_broken_plugin(folder: Path) -> dict[str, str]:
    """An environment whose sys.path holds the broken distribution, as if pip-installed."""
    site = folder / "site"
    dist = site / "broken_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS)
    (site / "broken_plugin.py").write_text(BROKEN_PY)
    path = os.pathsep.join([str(REPO), str(site), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "BENCH_CACHE_DIR": str(folder / "cache"), "OMP_NUM_THREADS": "1"}


def bench(env: dict[str, str], folder: Path, *args: str) -> tuple[int, str, list[str]]:
    proc = subprocess.run([sys.executable, "-m", "bench", *args], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=300)
    return proc.returncode, proc.stdout, [line for line in proc.stderr.splitlines() if line.strip()]


WARNING = ("warning: plugin broken-plugin: entry point broken-def = 'broken_plugin' failed to import "
           "(ModuleNotFoundError: No module named 'no_such_dependency_anywhere'); its defenses are unavailable")


@pytest.mark.slow
def test_a_broken_installed_plugin_breaks_no_unrelated_command(tmp_path):
    env = installed_broken_plugin(tmp_path)
    code, out, err = bench(env, tmp_path, "list", "defenses")
    assert code == 0 and err == [WARNING], err
    assert "rmc" in out and "half-registered" not in out
    # A grid of built-in methods runs, on two processes: the warning is the parent's, once.
    (tmp_path / "ok.toml").write_text(GRID.format(runtime="none"))
    code, out, err = bench(env, tmp_path, "run", "--grid", "ok.toml", "--no-tracking", "--jobs", "2")
    assert code == 0 and err == [WARNING], err
    assert "2 cells run (0 failed)" in out and "warning" not in out
    # A grid naming the broken plugin's defense: the usual refusal of a name nothing registered (exit 2,
    # one line, after the plugin's warning), nothing run.
    (tmp_path / "bad.toml").write_text(GRID.format(runtime="broken-def"))
    code, out, err = bench(env, tmp_path, "run", "--grid", "bad.toml", "--no-tracking")
    assert code == 2 and len(err) == 2 and err[0] == WARNING, err
    assert "unknown defense 'broken-def'" in err[1], err
    assert "cells run" not in out
