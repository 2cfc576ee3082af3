"""Progress inside cells (a hook the methods report to, bars on a terminal only, one line per finished
cell otherwise, the grid bar naming the running cell) and a quiet `bench ui` (issue 32)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from bench.core import progress
from bench.core.methods import create_attack
from bench.run import progress as run_progress
from bench.track import ui


class Recorder:
    """A reporter that keeps every task: [desc, total, unit, units done, closed]."""

    def __init__(self) -> None:
        self.tasks: list[list] = []

    def __call__(self, desc: str, total: int, unit: str) -> Recorder:
        self.tasks.append([desc, total, unit, 0, False])
        return self

    def update(self, n: int = 1) -> None:
        self.tasks[-1][3] += n

    def close(self) -> None:
        self.tasks[-1][4] = True


def test_crafting_reports_points_done_batch_by_batch():
    import attacks  # noqa: F401 - registers fgsm

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    x, y = torch.rand(10, 1, 4, 4), torch.randint(0, 3, (10,))
    rec = Recorder()
    previous = progress.set_reporter(rec)
    try:
        x_adv = create_attack("fgsm", eps=0.1, batch_size=4)(model, x, y)
    finally:
        progress.set_reporter(previous)
    assert rec.tasks == [["craft fgsm", 10, "pt", 10, True]]
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and not torch.equal(x_adv, x)


def test_steps_count_each_item_once_its_body_ran_and_close_on_break():
    rec = Recorder()
    previous = progress.set_reporter(rec)
    try:
        seen = []
        for i in progress.steps(range(5), "rmc stream"):
            assert rec.tasks[-1][3] == i  # item i is not done while its body runs
            seen.append(i)
            if i == 2:
                break
    finally:
        progress.set_reporter(previous)
    assert seen == [0, 1, 2] and rec.tasks == [["rmc stream", 5, "pt", 2, True]]
    assert list(progress.steps([1, 2], "silent")) == [1, 2]  # no reporter: nothing drawn, nothing lost


def test_cell_bars_only_on_a_terminal(monkeypatch):
    with run_progress.cell_bars(True):  # pytest's stderr is no terminal
        assert progress.set_reporter(None) is None
    monkeypatch.setattr(run_progress, "on_terminal", lambda: True)
    with run_progress.cell_bars(False):
        assert progress._reporter is None
    with run_progress.cell_bars(True):
        assert progress._reporter is run_progress.tqdm_task
    assert progress._reporter is None


def test_grid_bar_names_the_running_cell_and_stays_off_without_a_terminal(monkeypatch):
    bar = run_progress.grid_bar("g", 3, enabled=True)
    assert bar.disable  # not a terminal: the runner's one line per finished cell is the output
    run_progress.running(bar, "standard/none/pgd/base/0.1")
    assert bar.postfix == "standard/none/pgd/base/0.1"
    monkeypatch.setattr(run_progress, "on_terminal", lambda: True)
    assert not run_progress.grid_bar("g", 3, enabled=True).disable
    assert run_progress.grid_bar("g", 3, enabled=False).disable


def test_ui_command_line_and_environment(monkeypatch):
    monkeypatch.delenv("PYTHONWARNINGS", raising=False)
    cmd = ui.ui_command(5000, 1)
    assert cmd[1:4] == ["-m", "mlflow", "ui"] and cmd[cmd.index("--workers") + 1] == "1"
    assert "--log-level warning" in cmd and "sqlite" not in " ".join(cmd)
    env = ui.ui_env("postgresql://u:pw@db/x")
    assert env["MLFLOW_BACKEND_STORE_URI"] == "postgresql://u:pw@db/x" and env["PYTHONWARNINGS"] == "ignore"
    assert "PYTHONWARNINGS" not in ui.ui_env("sqlite:///m.db", verbose=True)


def test_ui_environment_silences_a_dependencys_deprecation_warning():
    # as starlette warns when MLflow's server imports it (from a module, so shown only by request)
    code = "import warnings; warnings.warn('starlette.middleware.wsgi is deprecated', DeprecationWarning)"
    env = ui.ui_env("sqlite:///m.db")
    loud = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**env, "PYTHONWARNINGS": "default"})
    assert "DeprecationWarning" in loud.stderr
    quiet = subprocess.run([sys.executable, "-X", "dev", "-c", code], capture_output=True, text=True, env=env)
    assert quiet.stderr == ""


# What `mlflow ui` printed with MLflow 3.17 (four workers); only the last line is news to a user.
SERVER_OUTPUT = """Registry store URI not provided. Using backend store URI.
[MLflow] Security middleware enabled with default settings (localhost-only). To allow connections from ...
2026/12/05 09:47:07 INFO mlflow.server.jobs.executor_registry: Available backends after discovery: local
2026/12/05 09:47:08 INFO:     Uvicorn running on http://127.0.0.1:5077 (Press CTRL+C to quit)
/venv/.../mlflow/server/fastapi_app.py:23: StarletteDeprecationWarning: starlette.middleware.wsgi is deprecated
  from starlette.middleware.wsgi import WSGIResponder, build_environ
2026/12/05 09:48:12 INFO:     Started server process [6051]
ERROR:    [Errno 98] error while attempting to bind on address ('127.0.0.1', 5077): address already in use
"""


def test_bench_ui_prints_one_line_and_the_servers_errors_only(tmp_path, monkeypatch):
    from tests.test_cli import bench

    started = {}

    class FakeServer:
        def __init__(self, cmd, env, **kw):
            started.update(cmd=cmd, env=env)
            self.stdout = iter(SERVER_OUTPUT.splitlines(keepends=True))

        def wait(self, timeout=None):
            return 1

    monkeypatch.setattr(ui.subprocess, "Popen", FakeServer)
    out = bench("ui", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--port", "5077", cwd=tmp_path)
    assert out.stdout.splitlines() == [f"MLflow UI for sqlite:///{tmp_path / 'm.db'} at http://127.0.0.1:5077 "
                                       "(Ctrl-C to stop)"]
    assert out.stderr.splitlines() == [SERVER_OUTPUT.splitlines()[-1]] and out.returncode == 2
    assert started["cmd"][started["cmd"].index("--workers") + 1] == "1"
    out = bench("ui", "--workers", "3", "--verbose", cwd=tmp_path)
    assert started["cmd"][started["cmd"].index("--workers") + 1] == "3"
    assert len(out.stderr.splitlines()) == len(SERVER_OUTPUT.splitlines())


@pytest.mark.slow  # trains a model (a few seconds)
def test_without_a_terminal_one_line_per_finished_cell_and_the_bar_names_the_running_cell(tmp_path, capsys):
    from bench.run.runner import Runner, RunOptions
    from bench.spec import grid

    (tmp_path / "g.toml").write_text(GRID)
    runner = Runner(grid.load(str(tmp_path / "g.toml")), RunOptions(
        cache_dir=tmp_path / "cache", results_dir=tmp_path / "results", tracking=False, progress=True))
    named, evaluate = [], runner.evaluation.run_cell

    def run_cell(cell):
        named.append((cell.key, runner.bar.postfix))
        return evaluate(cell)

    runner.evaluation.run_cell = run_cell
    summary = runner.run()
    assert summary.ran == 2 and summary.failed == 0
    keys = [c.key for c in runner.cells]
    assert named == [(keys[0], keys[0]), (keys[1], keys[1])]  # the running cell, not the finished one
    err = capsys.readouterr()
    lines = [line for line in (err.out + err.err).splitlines() if line.strip()]
    cell_lines = [line for line in lines if line.startswith("[")]
    assert [line.split(": ")[0] for line in cell_lines] == [f"[1/2] {keys[0]}", f"[2/2] {keys[1]}"]
    assert "\r" not in err.err and "grid tiny" not in err.err + err.out  # no bar drawn


GRID = """name = "tiny"
dataset = "digits"
arch = "small-cnn"
limit = 20
train_limit = 100
seed = 0
[train.standard]
epochs = 1
[runtime.none]
[[attacks]]
name = "fgsm"
eps = [0.05, 0.1]
"""
