"""``bench ui``: MLflow's UI for the tracking store, quiet. One server worker by default (MLflow
starts four), MLflow's and uvicorn's INFO lines and the deprecation warnings of its dependencies
filtered out; what is left (an error, a port in use) reaches the console."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable

#: Lines of MLflow's server that say nothing a user acts on (``--verbose`` shows them).
NOISE = re.compile(
    r"(^|\s)INFO[: ]"                          # uvicorn's and MLflow's INFO log lines
    r"|Warning: |warnings\.warn\("             # a warning, and its source line below
    r"|^\s+(from|import) \S"                   # the source line a DeprecationWarning quotes
    r"|^Registry store URI not provided"
    r"|^\[MLflow\] Security middleware enabled")


def ui_command(port: int, workers: int, host: str = "127.0.0.1") -> list[str]:
    """The MLflow server's command line (the store goes through the environment: ``ps`` shows every
    user of the machine a command line, and a URI may hold a password)."""
    return [sys.executable, "-m", "mlflow", "ui", "--host", host, "--port", str(port), "--workers", str(workers),
            "--uvicorn-opts", "--log-level warning"]


def ui_env(uri: str, verbose: bool = False) -> dict[str, str]:
    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": uri}
    if not verbose:  # every server process inherits these: uvicorn's workers are fresh interpreters
        env.update(PYTHONWARNINGS="ignore", MLFLOW_LOGGING_LEVEL="WARNING")
    return env


def is_noise(line: str) -> bool:
    return bool(NOISE.search(line))


def serve(uri: str, port: int, workers: int, verbose: bool, write: Callable[[str], None]) -> int:
    """Run the server until it ends (or Ctrl-C), relaying its lines but the noise; its exit code."""
    proc = subprocess.Popen(ui_command(port, workers), env=ui_env(uri, verbose), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            if verbose or not is_noise(line):
                write(line.rstrip())
        return proc.wait()
    except KeyboardInterrupt:  # the server got the terminal's Ctrl-C too; give it time to stop
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        return 0
