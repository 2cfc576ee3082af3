"""Local worker processes for ``bench run --jobs N``: N processes share one grid's cells on one machine.

Cells run one thread each (BENCH_NUM_THREADS defaults to 1), so a second core needs a second process.
The workers are ordinary ``bench run`` processes on the same results folder: the per-cell claims
(bench.core.locks) already make such runs split the cells and never compute one twice, and the
cache lock makes one of them train a shared model while the others wait. Each worker walks the cells
from a different starting group (``rotate``), so they start on different models instead of queueing
for the same training. The parent relays every worker's lines with a ``[worker k]`` prefix and
writes the leaderboard once all have finished.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from bench.core.entrypoints import QUIET_ENV
from bench.core.errors import BenchError

if TYPE_CHECKING:
    from bench.spec.grid import Cell

#: The runner's line for a finished cell: "[3/165] standard/none/fgsm/base/0.1: clean ...".
CELL_LINE = re.compile(r"^\[\d+/\d+\] \S+: ")

#: ``--jobs auto`` never starts more processes than this (each holds a model, data and its database).
MAX_AUTO_JOBS = 8


def cpu_cores() -> int:
    """Cores this process may run on (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_jobs(jobs: str, device: str, executor: str) -> int:
    """The number of local processes for ``--jobs``: ``auto`` is one per core on a CPU run (at most
    MAX_AUTO_JOBS) and 1 on a GPU, where one process already keeps the device busy."""
    if jobs == "auto":
        if executor != "local":
            return 1
        from bench.core.device import resolve as resolve_device

        return 1 if resolve_device(device).type != "cpu" else max(1, min(cpu_cores(), MAX_AUTO_JOBS))
    try:
        n = int(jobs)
    except ValueError:
        raise BenchError(f"--jobs must be a positive number or auto, got {jobs!r}") from None
    if n < 1:
        raise BenchError(f"--jobs must be a positive number or auto, got {jobs!r}")
    if n > 1 and executor != "local":
        raise BenchError("--jobs is for the local executor; Ray spreads cells over its own workers")
    return n


def _group(cell: Cell) -> tuple[str, str]:
    """Cells of one group share a model (and a runtime defense's database)."""
    return cell.train_defense, cell.runtime_defense


def trains_per_point(name: str) -> bool:
    """The runtime defense trains a network at every test point (defenses.RuntimeDefense)."""
    import defenses

    try:
        return bool(getattr(defenses.DEFENSES.get(name), "trains_per_point", False))
    except BenchError:
        return False


def rotate(cells: Sequence[Cell], rank: int, count: int) -> list[Cell]:
    """Worker ``rank``'s order of the cells: groups whose runtime defense trains per point first (a
    long cell started last keeps every other worker idle at the end), the rest after; within each
    part, worker ``rank`` starts at group ``rank * groups // count`` so that the workers start on
    different models instead of queueing for one training."""
    groups: dict[tuple[str, str], list[Cell]] = {}
    for cell in cells:
        groups.setdefault(_group(cell), []).append(cell)
    heavy = {name for name in {g[1] for g in groups} if trains_per_point(name)}
    order: list[Cell] = []
    for part in ([g for k, g in groups.items() if k[1] in heavy], [g for k, g in groups.items() if k[1] not in heavy]):
        start = rank * len(part) // max(count, 1)
        order += [c for g in part[start:] + part[:start] for c in g]
    return order


def defer_busy(order: Iterable[Cell], busy: Callable[[Cell], bool]) -> Iterator[Cell]:
    """``order``, lazily, except that a cell whose model another worker is training right now waits at
    the back: this worker runs what it can meanwhile instead of blocking on the cache lock for the
    whole training (a 27-minute denoise-block training held a core idle on fashion-mnist). Once only
    such cells are left, the first is yielded anyway (its lock then waits, as before)."""
    deferred: list[Cell] = []
    for cell in order:
        if busy(cell):
            deferred.append(cell)
            continue
        yield cell
    while deferred:
        ready = next((c for c in deferred if not busy(c)), deferred[0])
        deferred.remove(ready)
        yield ready


#: Options a worker gets through its environment, not its command line, which ``ps`` shows every user
#: of the machine: a tracking URI may hold a password (postgresql://user:secret@host/db).
ENV_OPTIONS = {"tracking_uri": "MLFLOW_TRACKING_URI"}


def child_args(ctx: Any, rank: int, count: int) -> list[str]:
    """The command line of worker ``rank``: this ``bench run``'s options as given (but ENV_OPTIONS),
    plus the worker's place, no leaderboard (the parent writes it once) and one job."""
    args: list[str] = []
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if (not getattr(param, "opts", None) or param.name in ("jobs", "worker", "leaderboard", *ENV_OPTIONS)
                or value is None):
            continue
        if getattr(param, "is_flag", False) and not param.secondary_opts:
            if value:
                args.append(param.opts[0])
        elif param.multiple:
            for v in value:
                args += [param.opts[0], str(v)]
        elif value != param.default:
            args += [param.opts[0], str(value)]
    return [sys.executable, "-m", "bench.cli", "run", *args, "--no-leaderboard", "--jobs", "1",
            "--worker", f"{rank}/{count}"]


def child_env(ctx: Any) -> dict[str, str]:
    """The variables that carry ENV_OPTIONS given on this command line to the workers."""
    return {var: str(ctx.params[name]) for name, var in ENV_OPTIONS.items() if ctx.params.get(name) is not None}


def parse_worker(text: str | None) -> tuple[int, int] | None:
    """``"k/n"`` -> (k, n); the hidden --worker option a parent passes to its workers."""
    if text is None:
        return None
    try:
        rank, count = (int(p) for p in text.split("/"))
    except ValueError:
        raise BenchError(f"--worker takes RANK/COUNT, got {text!r}") from None
    if not 0 <= rank < count:
        raise BenchError(f"--worker {text}: the rank must be in 0..{count - 1}")
    return rank, count


class Workers:
    """Start worker processes, relay their output line by line, wait for them; on an exception in
    the parent (Ctrl-C, SIGTERM) stop them, so each releases its claims and keeps its finished
    records."""

    def __init__(self, commands: list[list[str]], write: Callable[[str], None],
                 env: dict[str, str] | None = None) -> None:
        self.commands, self.write, self.env = commands, write, env or {}
        self.procs: list[subprocess.Popen] = []
        self.threads: list[threading.Thread] = []
        #: cells each worker finished (1-based rank), counted from its "[i/n] cell: ..." lines
        self.cells = [0] * (len(commands) + 1)

    def __enter__(self) -> Workers:
        # The parent's bar is the one progress bar, and its warning the one about a broken plugin;
        # unbuffered, so lines arrive as cells finish.
        env = {**os.environ, **self.env, "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1", QUIET_ENV: "1"}
        for rank, cmd in enumerate(self.commands, 1):
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                    bufsize=1)
            thread = threading.Thread(target=self._relay, args=(proc, rank), daemon=True)
            thread.start()
            self.procs.append(proc)
            self.threads.append(thread)
        return self

    def _relay(self, proc: subprocess.Popen, rank: int) -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            if CELL_LINE.match(line):
                self.cells[rank] += 1
            self.write(f"[worker {rank}] {line.rstrip()}")

    def wait(self) -> list[int]:
        """Every worker's exit code, once all have ended."""
        codes = [proc.wait() for proc in self.procs]
        for thread in self.threads:
            thread.join()
        return codes

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            return
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # a worker unwinds like Ctrl-C: claims released
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
