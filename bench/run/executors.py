"""Where cells run: in this process (``local``) or as tasks on a Ray cluster (``ray``).

An executor yields ``(cell, record, sample)`` as cells finish; the runner (the driver) logs each to
MLflow and writes it to results/<grid>.jsonl, so both executors produce the same records. A Ray task
builds a Runner for the grid in its worker process (kept for the worker's next cells) and runs one
cell; artifacts are shared through the content-addressed cache, which must be on a filesystem every
node sees (``--cache-dir``). Ray is imported only when the ray executor is used.

Without an address the executor starts a fresh local cluster (never one a stale /tmp/ray record
names); with one it first asks the cluster's GCS, in a child process and within ``JOIN_TIMEOUT``,
whether it answers and wants Ray's auth token (Ray 2.60's default), so that every failure is one line.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.core.errors import BenchError
from bench.run.local_executor import LocalExecutor

if TYPE_CHECKING:  # the runner imports torch: the CLI's "nothing to do" path must not pay for it
    from bench.run.runner import Runner, RunOptions
    from bench.spec.grid import Cell, GridSpec

__all__ = ["EXECUTORS", "LocalExecutor", "RayExecutor", "create", "import_ray", "init_ray", "join_address",
           "ray_map"]

EXECUTORS = ("local", "ray")
Result = tuple["Cell", dict[str, Any], Any]


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise BenchError("the ray executor needs Ray: pip install -e '.[ray]'") from None
    return ray


JOIN_TIMEOUT = 30.0  # seconds an existing cluster has to answer before the run gives up


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


# Run in a child process, so that a GCS that never answers costs a bounded wait and Ray's C++ retry
# warnings go to a pipe, not the user's terminal. Prints one JSON line.
_PROBE = """
import json, socket, sys
from ray._private.services import canonicalize_bootstrap_address
from ray._raylet import AuthenticationMode, AuthenticationTokenLoader, GcsClient, get_authentication_mode
out = {"token": AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True)}
try:
    out["address"] = address = canonicalize_bootstrap_address(sys.argv[1])
    host, _, port = address.rpartition(":")
    socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    if get_authentication_mode() == AuthenticationMode.TOKEN and not out["token"]:
        out["status"] = "no token"  # GcsClient would abort the process
    else:
        GcsClient(address=address)
        out["status"] = "ok"
except Exception as exc:
    out["status"] = "auth" if type(exc).__name__ == "AuthenticationError" else "error"
    out["detail"] = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
print(json.dumps(out))
"""


def _probe(address: str, timeout: float, env: dict[str, str]) -> dict[str, Any]:
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE, address], env=env, capture_output=True, text=True,
                              timeout=timeout)
        return json.loads(done.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        raise BenchError(f"Ray cluster at {address} did not answer within {timeout:.0f} s; is it a Ray head "
                         "(ray start --head)?") from None
    except (IndexError, ValueError):
        return {"status": "error", "detail": f"the probe exited {done.returncode}"}


def join_address(address: str, timeout: float = JOIN_TIMEOUT) -> str:
    """The ``host:port`` to join for ``address`` (``auto``: the cluster Ray would pick), once its GCS
    answered within ``timeout``. A cluster that asks for Ray's auth token gets it when one is at hand
    (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) and RAY_AUTH_MODE is unset: this process
    then runs with RAY_AUTH_MODE=token, as ray.init does for a cluster it finds by itself."""
    if address != "auto":
        check_reachable(address)
    got = _probe(address, timeout, dict(os.environ))
    mode = os.environ.get("RAY_AUTH_MODE")
    if got["status"] == "auth" and mode is None and got["token"]:
        got = _probe(address, timeout, {**os.environ, "RAY_AUTH_MODE": "token"})
        if got["status"] == "ok":
            os.environ["RAY_AUTH_MODE"] = "token"
            from ray._raylet import Config

            Config.initialize("")  # Ray caches its config: make it read RAY_AUTH_MODE again
    if got["status"] == "ok":
        return got["address"]
    where = f"Ray cluster at {got.get('address') or address}"
    if got["status"] == "no token":
        raise BenchError("RAY_AUTH_MODE=token but there is no auth token here: export RAY_AUTH_TOKEN=<`ray "
                         "get-auth-token` on the head>")
    if got["status"] != "auth":
        raise BenchError(f"cannot connect to {where}: {got['detail']}")
    if not got["token"]:
        raise BenchError(f"{where} asks for an auth token and none is set here: export RAY_AUTH_MODE=token and "
                         "RAY_AUTH_TOKEN=<`ray get-auth-token` on the head>")
    if mode is not None and mode.lower() != "token":
        raise BenchError(f"{where} asks for an auth token but RAY_AUTH_MODE={mode}: export RAY_AUTH_MODE=token")
    raise BenchError(f"{where} refused this machine's auth token: export RAY_AUTH_TOKEN=<`ray get-auth-token` "
                     "on the head>")


def init_ray(address: str | None = None, num_cpus: int | None = None, timeout: float = JOIN_TIMEOUT) -> Any:
    """Ray, initialized: joined to the cluster at ``address``, or a fresh local cluster when there is none
    (``address="local"``: never the one a stale /tmp/ray/ray_current_cluster names), dashboard off.
    Fails with one line."""
    import logging
    import warnings

    ray = import_ray()
    if ray.is_initialized():
        return ray
    if address in (None, "local"):
        target = "local"
    elif address.startswith("ray://"):  # Ray Client: its server is no GCS to probe
        check_reachable(address)
        target, num_cpus = address, None
    else:
        target, num_cpus = join_address(address, timeout), None
    try:
        with warnings.catch_warnings():  # Ray Client's time-out UserWarning: the BenchError line says it
            warnings.simplefilter("ignore")
            ray.init(address=target, num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR, configure_logging=True)
    except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BenchError(f"cannot connect to Ray at {address or 'a new local cluster'}: {first[:200]}") from None
    return ray


def ray_map(fn: Any, kwargs_list: list[dict[str, Any]], address: str | None = None,
            num_gpus: float | None = None) -> Iterator[Any]:
    """A ``map_fn`` for defenses.dprime.build_disk_database: each shard task a Ray task (a GPU each when
    the cluster has GPUs), results as they finish, so the driver records every finished shard at once and
    a killed job resumes from them. The model and dataset go to the object store once, not per task."""
    ray = init_ray(address)
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
        self._ray = init_ray(self.address, self.num_cpus)

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
            bar = getattr(runner, "bar", None)
            if bar is not None:  # cells run side by side here: the grid bar says how many
                bar.set_postfix_str(f"{len(pending)} cells queued or running on Ray", refresh=True)
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
