"""Where cells run: in this process (``local``) or as tasks on a Ray cluster (``ray``).

An executor yields ``(cell, record, sample)`` as cells finish; the runner (the driver) logs each to
MLflow and writes it to results/<grid>.jsonl, so both executors produce the same records. A Ray task
builds a Runner for the grid in its worker process (kept for the worker's next cells) and runs one
cell; artifacts are shared through the content-addressed cache, which must be on a filesystem every
node sees (``--cache-dir``). Ray is imported only when the ray executor is used.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.core.errors import BenchError
from bench.run.local_executor import LocalExecutor

if TYPE_CHECKING:  # the runner imports torch: the CLI's "nothing to do" path must not pay for it
    from bench.run.runner import Runner, RunOptions
    from bench.spec.grid import Cell, GridSpec

__all__ = ["EXECUTORS", "LocalExecutor", "RayExecutor", "create", "import_ray", "ray_map"]

EXECUTORS = ("local", "ray")
Result = tuple["Cell", dict[str, Any], Any]


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise BenchError("the ray executor needs Ray: pip install -e '.[ray]'") from None
    return ray


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, with one line, when ``host:port`` / ``ray://host:port`` does not answer
    (Ray itself retries for a minute or more)."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise BenchError(f"--ray-address {address!r} is not host:port or ray://host:port")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise BenchError(f"Ray cluster at {address} is unreachable ({exc.strerror or exc}); start it with "
                         "`ray start --head` or fix --ray-address") from None


def ray_map(fn: Any, kwargs_list: list[dict[str, Any]], address: str | None = None,
            num_gpus: float | None = None) -> Iterator[Any]:
    """A ``map_fn`` for defenses.dprime.build_disk_database: each shard task a Ray task (a GPU each when
    the cluster has GPUs), results as they finish, so the driver records every finished shard at once and
    a killed job resumes from them. The model and dataset go to the object store once, not per task."""
    ray = import_ray()
    if not ray.is_initialized():
        if address:
            check_reachable(address)
        ray.init(address=address, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
    if num_gpus is None:
        num_gpus = 1 if ray.cluster_resources().get("GPU", 0) else 0
    remote = ray.remote(num_gpus=num_gpus)(fn)
    shared: dict[int, Any] = {}

    def put(v: Any) -> Any:  # one object-store copy per distinct object (model, dataset)
        if isinstance(v, (str, int, float, bool, type(None))):
            return v
        return shared.setdefault(id(v), ray.put(v))

    pending = [remote.remote(**{k: put(v) if k in ("model", "train_set") else v for k, v in kw.items()})
               for kw in kwargs_list]
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        yield ray.get(done[0])


class RayExecutor:
    """Each cell a Ray task (one GPU each when the cluster has GPUs), gathered as they finish."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        self.address, self.num_cpus = address, num_cpus
        self._ray: Any = None

    def start(self, runner: Runner) -> None:
        ray = import_ray()
        if not ray.is_initialized():
            if self.address:
                check_reachable(self.address)
            import logging

            try:
                ray.init(address=self.address, num_cpus=self.num_cpus if not self.address else None,
                         include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                         configure_logging=True)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise BenchError(f"cannot connect to Ray at {self.address or 'a new local cluster'}: "
                                 f"{first[:200]}") from None
        self._ray = ray

    def device_label(self, runner: Runner) -> str:
        gpus = int(self._ray.cluster_resources().get("GPU", 0))
        return f"ray ({gpus} GPU)" if gpus else "ray (cpu)"

    def run(self, runner: Runner, cells: list[Cell]) -> Iterator[Result]:
        ray = self._ray
        gpus = 1 if self._ray.cluster_resources().get("GPU", 0) >= 1 else 0
        task = ray.remote(num_gpus=gpus, max_retries=0)(run_cell_task)
        spec, options = ray.put(runner.spec), ray.put(portable_options(runner.opt))
        pending = {task.remote(spec, options, cell): cell for cell in cells}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                cell = pending.pop(ref)
                try:
                    record, sample = ray.get(ref)
                except Exception as exc:  # the worker died (killed, out of memory): the cell failed
                    record = {**runner.cell_fields(cell), **runner.failure(exc), "n": 0, "seconds": 0.0,
                              "examples_per_second": 0.0}
                    sample = None
                yield cell, record, sample


def portable_options(opt: RunOptions) -> RunOptions:
    """Options for a worker: absolute paths (a worker's cwd differs), no tracking, no progress."""

    def resolve(p: Path | None) -> Path | None:
        return Path(p).resolve() if p is not None else None

    return dataclasses.replace(opt, cache_dir=resolve(opt.cache_dir), data_dir=resolve(opt.data_dir),
                               results_dir=resolve(opt.results_dir), tracking=False, progress=False)


_WORKER_RUNNERS: dict[str, Runner] = {}


def run_cell_task(spec: GridSpec, options: RunOptions, cell: Cell) -> tuple[dict[str, Any], Any]:
    """Body of a Ray task: one cell with a Runner kept per (grid, options) in this worker."""
    from bench.core.cache import config_hash
    from bench.run.runner import Runner

    key = config_hash({"spec": dataclasses.asdict(spec), "options": dataclasses.asdict(options)})
    runner = _WORKER_RUNNERS.get(key)
    if runner is None:
        runner = Runner(spec, options)
        runner.setup()
        _WORKER_RUNNERS[key] = runner
    record = runner.run_cell(cell)
    return record, runner.sample(cell, record)


def create(name: str, ray_address: str | None = None) -> LocalExecutor | RayExecutor:
    if name == "local":
        if ray_address:
            raise BenchError("--ray-address needs --executor ray")
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(ray_address)
    raise BenchError(f"unknown executor {name!r}; use one of {', '.join(EXECUTORS)}")
