"""MLflow tracking: one experiment per grid (``advbench/<grid>``), one parent run per ``bench run``
(named after the grid and its start time), a nested run per cell.

With ``--jobs N`` the main process opens the parent run and hands its id to the worker processes
(``PARENT_RUN_ENV``); their Trackers attach to it (``parent_run_id``) and nest their cells under it
without ever ending it, so one command is one parent run in the UI whatever N.

The default store is the embedded ``sqlite:///mlflow.db`` in the working folder unless
``--tracking-uri`` / ``MLFLOW_TRACKING_URI`` names another.

Tracking mirrors results/<grid>.jsonl and never fails a cell: ``Tracker.mirror`` retries a failed
call with backoff for at most ``retry_s`` seconds ($BENCH_TRACKING_RETRY_S, default 10), then prints
one warning and reports False for this and every later cell of the invocation, whose payloads the
runner keeps in the outbox (bench.track.outbox) for ``bench track``. MLflow's console lines ("View run
...") and log messages are silenced unless ``verbose``.
"""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from bench.core.errors import BenchError, mask_secrets

DEFAULT_URI = "sqlite:///mlflow.db"
DEFAULT_RETRY_S = 10.0
#: The variable through which ``bench run --jobs N`` gives its workers the parent run's id.
PARENT_RUN_ENV = "BENCH_MLFLOW_PARENT_RUN"
#: The tag MLflow's UI nests a run under its parent by.
PARENT_TAG = "mlflow.parentRunId"


def experiment_name(grid: str) -> str:
    """The grid's MLflow experiment: prefixed, so that it cannot be taken for MLflow's own "Default"."""
    return f"advbench/{grid}"


def parent_run_name(grid: str, started: float | None = None) -> str:
    """``"<grid> 2026-12-05 09:41:07"``: the grid and the local start time of the invocation."""
    return f"{grid} {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))}"


def default_retry_s() -> float:
    try:
        return max(0.0, float(os.environ.get("BENCH_TRACKING_RETRY_S", DEFAULT_RETRY_S)))
    except ValueError:
        raise BenchError("BENCH_TRACKING_RETRY_S must be a number of seconds") from None


def _first_line(exc: BaseException) -> str:
    text = mask_secrets(str(exc)).strip()  # before it is cut: half a URI would escape the mask
    if "Failed to establish a new connection" in text or "Connection refused" in text:
        text = "connection refused"  # instead of urllib3's 300-character retry report
    return f"{type(exc).__name__}: {text.splitlines()[0][:150]}" if text else type(exc).__name__


@contextlib.contextmanager
def _store_creation_lock(uri: str) -> Iterator[None]:
    """Serialise opening a SQLite store: MLflow creates and migrates its schema on first use, and two
    runs starting at once on a fresh ``mlflow.db`` collided in that migration (one failed with
    "table _alembic_tmp_tags already exists", the other with an alembic version mismatch)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    from bench.core.cache import lock

    with lock(Path(uri[len("sqlite:///"):])):
        yield


@contextlib.contextmanager
def _logging_off(off: bool) -> Iterator[None]:
    """No log record at all in the block when ``off``: ending the parent after an interrupt that landed
    inside a query makes SQLAlchemy log "Error closing cursor" with a traceback."""
    previous = logging.root.manager.disable
    if off:
        logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        if off:
            logging.disable(previous)


@contextlib.contextmanager
def _mlflow_run(mlflow: Any, **kwargs: Any) -> Iterator[None]:
    """``mlflow.start_run(**kwargs)`` ended FINISHED, or FAILED on an error; an interrupt leaves it on
    the stack for Tracker.__exit__ (KILLED). Not MLflow's own ``with start_run()``: its end during the
    unwinding met the SQLite lock the interrupted write still held, and the "database is locked" it
    raised replaced the interrupt, which mirror() then retried away (seen: the run went on, exit 0)."""
    mlflow.start_run(**kwargs)
    try:
        yield
    except Exception:
        with contextlib.suppress(Exception):
            mlflow.end_run(status="FAILED")
        raise
    mlflow.end_run()


class _Masked(io.TextIOBase):
    """A text stream that writes to ``out`` with every URI's password masked (``--verbose``: MLflow
    prints "View run ... at: http://user:secret@host/#/...")."""

    def __init__(self, out: Any) -> None:
        self.out = out

    def write(self, text: str) -> int:
        self.out.write(mask_secrets(text))
        return len(text)

    def flush(self) -> None:
        self.out.flush()


class MaskFilter(logging.Filter):
    """Masks the passwords of URIs in a log record's message (its arguments merged in first)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def mask_log_handlers(*names: str) -> None:
    """Every handler of these loggers (and the root's) masks passwords, once."""
    handlers = [h for name in (*names, "") for h in logging.getLogger(name).handlers]
    for handler in [*handlers, *([logging.lastResort] if logging.lastResort else [])]:  # no handler: lastResort
        if not any(isinstance(f, MaskFilter) for f in handler.filters):
            handler.addFilter(MaskFilter())


def tracking_uri(uri: str | None = None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def save_sample_png(x: torch.Tensor, x_adv: torch.Tensor, path: Path, n: int = 8) -> None:
    """Top row clean, bottom row adversarial; small images are upscaled to at least 32 px."""
    from torchvision.utils import save_image

    pair = torch.cat([x[:n], x_adv[:n]]).detach().float().cpu()
    if pair.shape[-1] < 32:
        pair = torch.nn.functional.interpolate(pair, scale_factor=32 // pair.shape[-1], mode="nearest")
    save_image(pair, path, nrow=min(n, len(x)), padding=2, pad_value=0.5)


def interval_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The record's 95% intervals (``clean_ci``, ``robust_ci``: [low, high]) as scalar metrics."""
    out = {}
    for key in ("clean_ci", "robust_ci"):
        ci = record.get(key)
        if isinstance(ci, (list, tuple)) and len(ci) == 2:
            out[f"{key}_low"], out[f"{key}_high"] = float(ci[0]), float(ci[1])
    return out


def indicator_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The record's indicators of attack failure (``indicators``: name -> fired / value / ...) as scalar
    metrics ``indicator.<name>.fired`` (0 / 1) and ``indicator.<name>.value``."""
    out: dict[str, float] = {}
    for name, entry in (record.get("indicators") or {}).items():
        if isinstance(entry, dict):
            out[f"indicator.{name}.fired"] = float(bool(entry.get("fired")))
            out[f"indicator.{name}.value"] = float(entry.get("value", 0.0))
    return out


def log_leaderboard(grid: str, files: list[Path], uri: str | None = None, run_id: str | None = None) -> None:
    """The published leaderboard (Markdown and pictures) as artifacts of a run in the grid's experiment:
    ``run_id``'s (the parent run of the ``bench run`` that wrote it, whose status stays as it is), else
    a run of its own."""
    import mlflow

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if run_id is not None:
        client = mlflow.tracking.MlflowClient(tracking_uri(uri))
        for f in files:
            client.log_artifact(run_id, str(f), artifact_path="leaderboard")
        return
    mlflow.set_tracking_uri(tracking_uri(uri))
    mlflow.set_experiment(experiment_name(grid))
    with _mlflow_run(mlflow, run_name=f"{grid} leaderboard", tags={"kind": "leaderboard"}):
        for f in files:
            mlflow.log_artifact(str(f), artifact_path="leaderboard")


class Tracker:
    """Context manager around one invocation's MLflow parent run. ``enabled=False`` logs nothing.

    ``parent_run_id``: attach to a parent run another process opened (a ``--jobs`` worker): cells
    nest under it, and this Tracker neither starts nor ends it (its owner marks it FINISHED, FAILED
    or KILLED)."""

    def __init__(self, grid: str, uri: str | None = None, enabled: bool = True,
                 tags: dict[str, str] | None = None, verbose: bool = False, retry_s: float | None = None,
                 run_name: str | None = None, warn: Callable[[str], None] | None = None,
                 parent_run_id: str | None = None) -> None:
        self.grid, self.uri, self.enabled = grid, tracking_uri(uri), enabled
        self.tags = tags or {}
        self.verbose = verbose
        self.retry_s = default_retry_s() if retry_s is None else retry_s
        self.run_name = run_name or parent_run_name(grid)
        self.owner = parent_run_id is None
        #: FAILED at the end although no exception left the block (a --jobs worker crashed)
        self.failed = False
        say = warn or (lambda line: print(line, file=sys.stderr, flush=True))
        self.warn = lambda line: say(mask_secrets(line))  # a URI's password never reaches the console
        #: Why tracking stopped mid-invocation (None while it works); later cells are not tried.
        self.degraded: str | None = None
        self._mlflow: Any = None
        self._parent_id: str | None = parent_run_id
        self._experiment_id: str | None = None

    @property
    def parent_id(self) -> str | None:
        """The parent run's id (None before ``__enter__`` of an owner, or when tracking is off)."""
        return self._parent_id if self.enabled else None

    @property
    def active(self) -> bool:
        return self._mlflow is not None

    @contextlib.contextmanager
    def _quiet(self) -> Iterator[None]:
        """MLflow prints "View run ... / View experiment ..." to stdout itself (not through logging);
        ``verbose`` shows it, with passwords masked."""
        if self.verbose:
            with contextlib.redirect_stdout(_Masked(sys.stdout)):
                yield
            return
        with contextlib.redirect_stdout(io.StringIO()):
            yield

    def __enter__(self) -> Tracker:
        if not self.enabled:
            return self
        if self.uri.startswith("http"):
            # Fail in seconds, not after minutes of retries, when the server is unreachable; mirror()
            # retries with its own bounded backoff.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        import mlflow

        # mlflow configures its loggers on import; quiet them afterwards (table creation, new
        # experiment, connection warnings during an outage, which the one warning line replaces).
        level = logging.INFO if self.verbose else logging.CRITICAL
        for name in ("mlflow", "alembic", "urllib3"):
            logging.getLogger(name).setLevel(level)
        if self.verbose:
            mask_log_handlers("mlflow", "alembic", "urllib3")

        try:
            with self._quiet(), _store_creation_lock(self.uri):
                mlflow.set_tracking_uri(self.uri)
                self._experiment_id = mlflow.set_experiment(experiment_name(self.grid)).experiment_id
                if self.owner:
                    run = mlflow.start_run(run_name=self.run_name, tags={**self.base_tags(), **self.tags})
                    self._parent_id = run.info.run_id
        except Exception as exc:
            raise BenchError(f"MLflow tracking store {self.uri} is unusable ({_first_line(exc)}); start the "
                             "server, pass another --tracking-uri, or use --no-tracking") from None
        self._mlflow = mlflow
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._mlflow is None:
            return
        # Ctrl-C and SIGTERM (raised as KeyboardInterrupt by the CLI) mark the parent KILLED.
        interrupted = exc_type is not None and issubclass(exc_type, KeyboardInterrupt)
        if exc_type is None:
            status = "FAILED" if self.failed else "FINISHED"
        else:
            status = "KILLED" if interrupted else "FAILED"
        if interrupted:
            # The interrupted write's connection, which the traceback's frames still hold, keeps SQLite
            # locked (ending the parent met "database is locked"): let it go back to the pool first.
            traceback.clear_frames(tb)
            gc.collect()
        try:
            with self._quiet(), _logging_off(interrupted):
                self._end_parent(status)
        except Exception as exc:  # the server is down: the parent stays RUNNING there, nothing else is lost
            if self.degraded is None and not interrupted:  # interrupted: the CLI's summary is the one line
                self.warn(f"warning: could not mark the MLflow parent run {status} ({_first_line(exc)})")
        self._mlflow = None

    def _end_parent(self, status: str) -> None:
        """End the parent run with ``status``. A signal that lands inside a cell's nested run (between
        its start and its end) leaves that run on MLflow's stack: end it too, or end_run() would end
        the nested run and leave the parent RUNNING (seen: SIGTERM in CI)."""
        mlflow = self._mlflow
        for _ in range(8):
            run = mlflow.active_run()
            if run is None or run.info.run_id == self._parent_id:
                break
            mlflow.end_run(status=status)
        if not self.owner:  # a worker's: the process that opened the parent ends it
            return
        run = mlflow.active_run()
        if run is not None and run.info.run_id == self._parent_id:
            mlflow.end_run(status=status)
        else:  # not on the stack any more: by id
            mlflow.tracking.MlflowClient().set_terminated(self._parent_id, status)

    def mirror(self, record: dict[str, Any], params: dict[str, Any],
               sample: tuple[torch.Tensor, torch.Tensor] | None = None, png: Path | None = None) -> bool:
        """Log one cell, retrying transient failures for at most ``retry_s`` seconds. False (after one
        warning line per invocation) when the store keeps failing: the caller keeps the payload."""
        if self._mlflow is None or self.degraded is not None:
            return False
        deadline, delay = time.monotonic() + self.retry_s, 0.5
        while True:
            try:
                with self._quiet():
                    self.log_cell(record, params, sample, png=png)
                return True
            except BenchError:
                raise
            except OSError as exc:
                from bench.core.cache import disk_error

                err = disk_error("an MLflow artifact", exc)
                if err is not None:
                    raise err from None
                last = exc
            except Exception as exc:  # mlflow wraps connection errors in its own exception types
                last = exc
            self._unwind()
            if time.monotonic() + delay > deadline:
                break
            time.sleep(delay)
            delay = min(2 * delay, 8.0)
        self._degrade(last)
        return False

    def _degrade(self, exc: BaseException) -> None:
        self.degraded = _first_line(exc)
        self.warn(f"warning: MLflow tracking at {self.uri} failed ({self.degraded}); cells go on and their "
                  "records are safe; MLflow payloads wait in the outbox for `bench track` (see the end of the run)")

    def _unwind(self) -> None:
        """After a failure inside a nested run, make the parent the active run again."""
        mlflow = self._mlflow
        for _ in range(8):
            run = mlflow.active_run()
            if run is None or run.info.run_id == self._parent_id:
                return
            with contextlib.suppress(Exception), self._quiet():
                mlflow.end_run(status="FAILED")  # pops the stack before it calls the server

    @staticmethod
    def base_tags() -> dict[str, str]:
        from bench.core.version import code_version

        return {"code_version": code_version(), "torch_version": torch.__version__,
                "python": platform.python_version()}

    def log_cell(self, record: dict[str, Any], params: dict[str, Any],
                 sample: tuple[torch.Tensor, torch.Tensor] | None = None, png: Path | None = None) -> None:
        if self._mlflow is None:
            return
        mlflow = self._mlflow
        metrics = {k: float(v) for k, v in record.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("seed", "n", "eps")}
        metrics.update(interval_metrics(record))
        metrics.update(indicator_metrics(record))
        tags = {k: str(record[k]) for k in ("status", "device", "code_version", "config_hash", "cell_id",
                                            "threat", "error") if record.get(k) not in (None, "")}
        tags["torch_version"] = torch.__version__
        flat = {k: str(v)[:500] for k, v in params.items()}
        self.drop_cell_runs(record["cell_id"])
        with _mlflow_run(mlflow, run_name=record["key"], nested=True, tags={**tags, PARENT_TAG: self._parent_id}):
            mlflow.log_params(flat)
            mlflow.log_metrics(metrics)
            if png is not None or sample is not None:
                with tempfile.TemporaryDirectory() as tmp:
                    out = Path(tmp) / "clean_vs_adversarial.png"
                    if png is not None:  # replayed from the outbox
                        shutil.copyfile(png, out)
                    else:
                        save_sample_png(*sample, out)
                    mlflow.log_artifact(str(out))

    def drop_cell_runs(self, cell_id: str) -> int:
        """Delete earlier runs of this cell in the experiment (a failed attempt, or one logged just
        before a kill, so never written to the results), so MLflow keeps one run per cell."""
        mlflow = self._mlflow
        if self._experiment_id is None:
            return 0
        client = mlflow.tracking.MlflowClient()
        old = client.search_runs([self._experiment_id], filter_string=f"tags.cell_id = '{cell_id}'",
                                 max_results=1000)
        for r in old:
            client.delete_run(r.info.run_id)
        return len(old)

    def log_training(self, name: str, params: dict[str, Any], history: list[dict[str, float]]) -> None:
        """A nested run for one trained model, with per-epoch loss and accuracy. A tracking failure
        here never fails the cell that needed the model: the curves are only lost from MLflow."""
        if self._mlflow is None or self.degraded is not None:
            return
        mlflow = self._mlflow
        try:
            with self._quiet(), _mlflow_run(mlflow, run_name=f"train {name}", nested=True,
                                                 tags={"kind": "training", PARENT_TAG: self._parent_id}):
                mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
                for row in history:
                    step = int(row["epoch"])
                    mlflow.log_metrics({k: float(v) for k, v in row.items() if k != "epoch"}, step=step)
        except Exception as exc:
            self._unwind()
            self._degrade(exc)
