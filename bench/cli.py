"""The ``bench`` command line: run grids, list registries, publish leaderboards, check regressions."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import click

from bench.core.errors import BenchError, mask_secrets
from bench.core.paths import inside

LISTABLE = ("attacks", "defenses", "datasets", "archs", "grids")


def _spec_records(grid: str, results_dir: Path, limit: int | None, seed: int | None, published: bool = False):
    """The grid and its finished records: a local run's (<results-dir>/<grid>.jsonl), or with
    ``published`` the published board's own copy (leaderboards/<grid>/records.jsonl)."""
    from bench.spec import grid as grids
    from bench.track.results import load_records

    spec = grids.load(grid)
    source = _records_path(spec.name, results_dir, published)
    if published and not source.is_file():
        raise BenchError(f"no published records of grid {spec.name} at {source} "
                         "(run from the repository root; a board published before records were kept needs a rerun)")
    records = load_records(source)
    try:
        wanted = {c.cell_id for c in spec.cells(limit=limit, seed=seed)}
    except BenchError:
        # A cell id fingerprints its checkpoint (e.g. under an unset $BENCH_WEIGHTS_DIR); the published
        # copy holds exactly the board's cells already, so rendering it needs no weights.
        if not published or limit is not None or seed is not None:
            raise
        return spec, records
    return spec, [r for r in records if r.get("cell_id") in wanted]


#: Where published boards live (tracked); a local run's board goes to <results-dir>/leaderboards/.
PUBLISHED = Path("leaderboards")


def _records_path(name: str, results_dir: Path = Path("results"), published: bool = False) -> Path:
    """A grid's records: the published board's copy, or a local run's under ``results_dir``."""
    return PUBLISHED / name / "records.jsonl" if published else Path(results_dir) / f"{name}.jsonl"


def _board_dir(results_dir: Path, publish: bool) -> Path:
    return PUBLISHED if publish else Path(results_dir) / "leaderboards"


def _write_leaderboard(spec, records, out: Path | None, results_dir: Path = Path("results"), publish: bool = False,
                       limit: int | None = None, data_dir: Path | None = None) -> Path:
    """The grid's board: a local run's under <results-dir>/leaderboards/ (not tracked), a published
    one (``publish``) under leaderboards/ with a copy of its records, so that it can be regenerated
    and compared with without rerunning."""
    from bench.core.cache import atomic_write_text
    from bench.report.leaderboard import notes_path, render

    path = Path(out) if out else inside(_board_dir(results_dir, publish), f"{spec.name}.md")
    # Hand-written notes live in <name>.notes.md beside the published file and are kept on every
    # regeneration; they speak about the published numbers, so a local board goes without them.
    notes = notes_path(path if out or publish else inside(PUBLISHED, f"{spec.name}.md"))
    # Pictures go to a folder named after the Markdown file, beside it, and are linked relatively.
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render(records, spec, figures_dir=path.parent / path.stem, link_prefix=path.stem,
                  notes=notes.read_text(encoding="utf-8") if notes.is_file() and (out or publish) else None,
                  limit=limit, data_dir=data_dir)
    atomic_write_text(path, text)
    if publish:
        import json

        atomic_write_text(inside(path.parent / path.stem, "records.jsonl"),
                          "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    return path


def _compare_line(spec, records) -> str:
    """How a local run compares with the published board of its grid (bench.report.compare)."""
    from bench.report.compare import compare_with_published
    from bench.track.results import load_records

    published = _records_path(spec.name, published=True)
    try:
        theirs = load_records(published) if published.is_file() else None
        return compare_with_published(records, spec, PUBLISHED, theirs)
    except BenchError:
        raise
    except Exception as exc:  # the run's records are saved; the comparison is a courtesy
        return f"not compared with {PUBLISHED / (spec.name + '.md')}: {type(exc).__name__}: {exc}"[:300]


_plugin_option = click.option(
    "--plugin", "plugins", multiple=True, type=click.Path(path_type=Path),
    help="A Python file whose @attacks.register / @defenses.register calls add methods (repeatable).")


def _load_plugins(files: tuple[Path, ...], spec=None) -> None:
    """Plugin files from the command line and the grid, then the grid's hyperparameters checked
    against the methods' signatures: every mistake is one line before any work starts."""
    from bench.spec.plugins import load_files

    if spec is not None:  # the spec carries them on, e.g. to Ray workers
        spec.plugins = tuple(dict.fromkeys([*(str(f.resolve()) for f in files), *spec.plugins]))
    load_files([*files, *(spec.plugins if spec is not None else ())])
    if spec is not None:
        from bench.spec.validate import check_spec

        check_spec(spec)


def _log_leaderboard(spec, path: Path, tracking_uri: str | None, run_id: str | None = None) -> None:
    """The leaderboard and its pictures as MLflow artifacts; a failure is a warning, not an error."""
    from bench.track.tracker import log_leaderboard

    try:
        log_leaderboard(spec.name, [path, *sorted((path.parent / path.stem).glob("*.png"))], tracking_uri, run_id)
    except Exception as exc:  # the Markdown is written; say why MLflow lacks it
        click.echo(mask_secrets(f"warning: MLflow logging of the leaderboard failed ({type(exc).__name__}: {exc}")[:300]
                   + ")", err=True)


class _Interrupted(Exception):
    """A Ctrl-C or SIGTERM (``args[0]``) out of a command, past click (which would print a blank line)."""


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            raise _Interrupted(exc) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="advbench")
def cli() -> None:
    """Adversarial-robustness benchmark: every defense against every attack, tracked in MLflow."""


@cli.command()
@click.option("--grid", "grid_name", default="default", show_default=True,
              help="Built-in grid name (see `bench list grids`) or path to a .toml spec.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Folder with dataset files (default $BENCH_DATA_DIR or ~/.cache/bench/data).")
@click.option("--download", is_flag=True, help="Download missing datasets with torchvision (needs network).")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Cache for models and adversarial examples (default $BENCH_CACHE_DIR or .bench-cache).")
@click.option("--results-dir", type=click.Path(path_type=Path), default=Path("results"), show_default=True)
@click.option("--tracking-uri", default=None, help="MLflow store (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db).")
@click.option("--no-tracking", is_flag=True, help="Do not log to MLflow.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--limit", type=int, default=None, help="Evaluate only the first N test examples.")
@click.option("--seed", type=int, default=None,
              help="Run only this seed (overrides the grid's seed, or picks one of its seeds = [...]).")
@click.option("--dry-run", is_flag=True, help="List the cells and what would run, then exit.")
@click.option("--leaderboard/--no-leaderboard", default=True, show_default=True,
              help="Write <results-dir>/leaderboards/<grid>.md when the run ends and compare it with the "
                   "published leaderboards/<grid>.md.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Run cells in this process or as Ray tasks (pip install -e '.[ray]').")
@click.option("--ray-address", default=None,
              help="Existing Ray cluster (auto, host:6379 or ray://host:10001); default: start a local one.")
@click.option("--smoke", is_flag=True,
              help="Every cell with budgets shrunk (bench.spec.smoke: <=4 points, 1 epoch, <=2 attack steps, ...), "
                   "at the grid's real shapes; records go to results/<grid>.smoke.jsonl.")
@click.option("--synthetic", is_flag=True,
              help="Seeded data of the dataset's exact shape and label count for splits whose files are missing.")
@click.option("--verbose", is_flag=True, help="Show MLflow's own console lines and log messages.")
@click.option("--jobs", "-j", default="auto", show_default=True, envvar="BENCH_JOBS", show_envvar=True,
              help="Local processes sharing the cells, one thread each: auto is one per CPU core on a CPU run "
                   "(at most 8) and 1 on a GPU.")
@click.option("--worker", default=None, hidden=True, help="RANK/COUNT: this process is one of --jobs' workers.")
@click.option("--stream-batch", default="auto", show_default=True, envvar="BENCH_STREAM_BATCH", show_envvar=True,
              help="RMC cells on one model and D' under different attacks run their streams together, this many "
                   "per batch: auto is 16 on a GPU and 1 (off) on a CPU, where batching measured slower.")
@_plugin_option
def run(grid_name: str, data_dir: Path | None, download: bool, cache_dir: Path | None, results_dir: Path,
        tracking_uri: str | None, no_tracking: bool, device: str, limit: int | None, seed: int | None,
        dry_run: bool, leaderboard: bool, executor: str, ray_address: str | None, smoke: bool, synthetic: bool,
        verbose: bool, jobs: str, worker: str | None, stream_batch: str, plugins: tuple[Path, ...]) -> None:
    """Run a grid: train or load models, attack, audit, record every cell."""
    from bench.core.cache import default_cache_dir
    from bench.run.executors import create as create_executor
    from bench.run.stream_batch import parse_stream_batch
    from bench.run.workers import parse_worker, resolve_jobs
    from bench.spec import grid as grids

    worker_of = parse_worker(worker)
    streams = parse_stream_batch(stream_batch)
    spec = grids.load(grid_name)
    if smoke:
        from bench.spec.smoke import LIMIT, smoke_spec

        _load_plugins(plugins, spec)
        spec, leaderboard = smoke_spec(spec), False  # smoke numbers never reach a leaderboard
        limit = None if limit is None else min(limit, LIMIT)
    runner_executor = create_executor(executor, ray_address)
    if not dry_run and _finished_already(spec, results_dir, limit, seed, leaderboard, data_dir):
        return  # answered from the results file alone: no torch, no registries
    _load_plugins(plugins, spec)
    from bench.run.runner import Runner, RunOptions

    opts = RunOptions(data_dir=data_dir, cache_dir=cache_dir or default_cache_dir(), results_dir=results_dir,
                      tracking_uri=tracking_uri, tracking=not no_tracking, device=device, limit=limit, seed=seed,
                      download=download, synthetic=synthetic, budget="smoke" if smoke else "full",
                      verbose=verbose, worker=worker_of, stream_batch=streams)
    if worker_of is not None:  # nest this worker's cells under the parent run of the `bench run` that started it
        from bench.track.tracker import PARENT_RUN_ENV

        opts.parent_run_id = os.environ.get(PARENT_RUN_ENV) or None
    n_jobs = resolve_jobs(jobs, device, executor) if worker_of is None else 1
    runner = Runner(spec, opts)
    plan = runner.plan()
    if dry_run:
        checked = runner.preflight(plan.todo) if plan.todo else []
        click.echo(f"grid {spec.name}: {len(runner.cells)} cells ({len(plan.todo)} to run, {len(plan.done)} done, "
                   f"{len(plan.skipped)} unavailable)")
        if checked:
            click.echo(f"preflight ok: {'; '.join(checked)}")
        for c in plan.todo:
            click.echo(f"  run   {c.key}")
        for c in plan.done:
            click.echo(f"  done  {c.key}")
        for c, why in plan.skipped:
            click.echo(f"  skip  {c.key}: {why}")
        return
    n_jobs = min(n_jobs, len(plan.todo))
    if n_jobs > 1:
        runner.preflight(plan.todo)  # bad input is one line from this process, not one per worker
        summary = _run_with_workers(runner, runner_executor, plan, n_jobs)
    else:
        summary = _run_interruptible(runner, runner_executor, len(plan.todo))
    if worker_of is not None:  # the parent sums up every worker's cells
        sys.exit(1 if summary.failed else 0)
    click.echo(f"{summary.ran} cells run ({summary.failed} failed), {summary.skipped_done} already done, "
               f"{summary.skipped_unavailable} unavailable; records in {summary.results_path}")
    if smoke:
        _report_memory(runner)
    if summary.claimed_elsewhere and worker_of is None:
        click.echo(f"{summary.claimed_elsewhere} cells were being computed by another run on this results "
                   "folder; rerun after it ends to include them in the leaderboard")
    if summary.queued and worker_of is None:  # a worker may count its fellows' entries in flight
        click.echo(f"{summary.queued} cells wait in the tracking outbox; run `bench track --grid {grid_name}` "
                   "when the MLflow server is back")
    if leaderboard:
        _, records = _spec_records(grid_name, results_dir, limit, seed)
        path = _write_leaderboard(spec, records, None, results_dir, limit=limit, data_dir=data_dir)
        click.echo(f"leaderboard written to {path}")
        click.echo(_compare_line(spec, records))
        if not no_tracking:
            _log_leaderboard(spec, path, tracking_uri, runner.parent_run_id)  # beside the cells, one run
    if summary.failed:
        click.echo(f"error: {summary.failed} cell(s) failed:", err=True)
        for line in summary.failures:
            click.echo(f"  {line}", err=True)
        sys.exit(1)
    if summary.crashed_workers:  # said above, worker by worker
        sys.exit(1)


def _run_with_workers(runner, executor, plan, n_jobs: int):
    """This process as worker 0 of ``n_jobs`` plus n_jobs - 1 worker processes (bench.run.workers); the
    summary counts every worker's cells. This process opens the one MLflow parent run of the command
    and gives its id to the workers, which nest their cells under it."""
    from tqdm.auto import tqdm

    from bench.core.device import resolve as resolve_device
    from bench.run.workers import CELL_LINE, Workers, child_args, child_env
    from bench.track.outbox import Outbox, drain
    from bench.track.tracker import PARENT_RUN_ENV

    ctx = click.get_current_context()
    click.echo(f"{len(plan.todo)} cells on {n_jobs} processes, one thread each (--jobs {n_jobs})")
    runner.opt.worker = (0, n_jobs)
    commands = [child_args(ctx, rank, n_jobs) for rank in range(1, n_jobs)]
    out = sys.stdout  # the real one: MLflow calls in this process redirect sys.stdout for a moment

    def relay(line: str) -> None:
        tqdm.write(line, file=out)
        bar = getattr(runner, "bar", None)
        if bar is not None and CELL_LINE.match(line.split("] ", 1)[-1]):
            bar.update(1)  # the main process's grid bar counts every worker's cells

    tracker = runner.open_tracker(str(resolve_device(runner.opt.device)), executor.name, jobs=str(n_jobs))
    # Ctrl-C reaches every worker itself; SIGTERM reaches this process, which stops the workers.
    with _signals_as_interrupt():
        try:
            with tracker:
                runner.opt.parent_run_id = tracker.parent_id
                env = {**child_env(ctx), **({PARENT_RUN_ENV: tracker.parent_id} if tracker.parent_id else {})}
                with Workers(commands, relay, env=env) as workers:
                    summary = runner.run(executor)
                    codes = workers.wait()
                # What the workers could not mirror (a store busy with another worker's write), into
                # this command's parent run: not a "sync" run of its own.
                outbox = Outbox(runner.store.path.parent, runner.spec.name)
                if tracker.active and tracker.degraded is None and len(outbox):
                    done = drain(outbox, tracker)[0]
                    if done:
                        click.echo(f"replayed {done} cells the workers queued into MLflow")
                summary.queued = len(outbox) if tracker.active else 0
                tracker.failed = any(code not in (0, 1) for code in codes)
        except KeyboardInterrupt as exc:  # the workers have stopped: count what every process saved
            runner.store.reload()
            saved = sum(runner.store.finished(c.cell_id) for c in plan.todo)
            _stopped(exc, f"{saved} of {len(plan.todo)} cells finished and saved")
    workers.cells[0] = summary.ran
    click.echo("cells by process: " + ", ".join(f"{rank}: {n}" for rank, n in enumerate(workers.cells)))
    runner.recount(plan)  # every process's cells, from the results file
    for rank, code in enumerate(codes, 1):
        if code not in (0, 1):  # 1: some cell failed, counted above
            click.echo(f"error: worker {rank} exited with code {code}; its lines above say why", err=True)
            summary.crashed_workers += 1  # not a cell: its unfinished cells rerun next time
    return summary


def _report_memory(runner) -> None:
    """Peak memory per cell of this grid and the largest cell (smoke runs size the real one)."""
    recs = [r for r in runner.store.records.values() if "peak_rss_mb" in r]
    if not recs:
        return
    key = "peak_cuda_mb" if any("peak_cuda_mb" in r for r in recs) else "peak_rss_mb"
    top = max(recs, key=lambda r: r.get(key, 0))
    click.echo(f"peak memory ({'CUDA max allocated' if key == 'peak_cuda_mb' else 'CPU RSS'}): largest cell "
               f"{top['key']} {top[key]:.0f} MB; median {sorted(r.get(key, 0) for r in recs)[len(recs) // 2]:.0f} MB")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so it unwinds like Ctrl-C (parent MLflow run KILLED)."""


#: The signal that is stopping this process (0: none yet) and whether its summary line is out.
_STOP = {"signum": 0, "said": False}


def _on_signal(signum: int, frame: object) -> None:
    """Ctrl-C or SIGTERM: mute the process and raise where it is; once the summary line is out, nothing."""
    import signal

    if _STOP["said"]:
        return
    _STOP["signum"] = signum
    _mute_after_interrupt()
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _swallowed(unraisable: object) -> None:
    """An interrupt raised inside a weakref callback or a __del__ is swallowed there (seen: SQLAlchemy's
    _collection_gced; the run went on and exited 0): send the signal again a moment later, from a
    thread, so that it lands in the main flow and not in this hook."""
    import threading

    if issubclass(getattr(unraisable, "exc_type", type(None)), KeyboardInterrupt) and not _STOP["said"]:
        again = threading.Timer(0.05, os.kill, (os.getpid(), _STOP["signum"] or 2))
        again.daemon = True
        again.start()


def _mute_after_interrupt() -> None:
    """The process is ending after Ctrl-C or SIGTERM, and its one summary line is all it may print:
    nothing from loggers (SQLAlchemy logs "Error closing cursor" and a 27-line traceback when the
    signal lands inside an MLflow query) or warnings, from exceptions in __del__, weakref and atexit
    callbacks (``_swallowed``), or from threads."""
    import logging
    import threading
    import warnings

    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    sys.unraisablehook = _swallowed
    threading.excepthook = lambda args: None


@contextlib.contextmanager
def _signals_as_interrupt():
    """In the block SIGTERM raises Terminated and Ctrl-C KeyboardInterrupt (``_on_signal``), so either
    unwinds like Ctrl-C and ends in one line."""
    import signal

    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _on_signal)}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where the shell ignores Ctrl-C
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, _on_signal)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _stopped(exc: BaseException, saved: str) -> None:
    """The one line of an interrupted command, then exit code 130."""
    _STOP["said"] = True
    what = "terminated" if isinstance(exc, Terminated) else "interrupted"
    click.echo(f"{what}: {saved}; rerun the same command to resume", err=True)
    _mute_after_interrupt()
    sys.exit(130)


def _run_interruptible(runner, executor, todo: int):
    """``runner.run`` with Ctrl-C and SIGTERM turned into one line and exit code 130."""
    with _signals_as_interrupt():
        try:
            return runner.run(executor)
        except KeyboardInterrupt as exc:
            summary = getattr(runner, "summary", None)
            _stopped(exc, f"{summary.ran if summary is not None else 0} of {todo} cells finished and saved")


def _finished_already(spec, results_dir: Path, limit: int | None, seed: int | None, leaderboard: bool,
                      data_dir: Path | None = None) -> bool:
    """Every cell of the grid already has an ok record: say so (and refresh the leaderboard)
    without importing torch, loading data or models, or opening MLflow."""
    from bench.report.flags import cell_flags
    from bench.track.results import ResultStore

    if limit is not None and limit <= 0:
        return False  # the Runner reports it
    store = ResultStore(inside(results_dir, f"{spec.name}.jsonl"))
    cells = spec.cells(limit=limit, seed=seed)
    if not store.all_finished([c.cell_id for c in cells]):
        return False
    store.set_flags(cell_flags(list(store.records.values())))
    click.echo(f"nothing to do: all {len(cells)} cells already finished; records in {store.path}")
    if leaderboard:
        wanted = {c.cell_id for c in cells}
        records = [r for r in store.records.values() if r.get("cell_id") in wanted]
        path = _write_leaderboard(spec, records, None, results_dir, limit=limit, data_dir=data_dir)
        click.echo(f"leaderboard written to {path}")
        click.echo(_compare_line(spec, records))
    return True


@cli.command()
@click.option("--grid", "grid_name", default="default", show_default=True)
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--gpus", "--workers", "workers", type=int, default=1, show_default=True,
              help="Also predict the wall time on N workers (Ray, one device each).")
@click.option("--limit", type=int, default=None, help="The --limit the real run will use.")
@click.option("--synthetic", is_flag=True, help="Seeded stand-ins for splits whose files are missing.")
@click.option("--against", type=click.Path(path_type=Path), default=None,
              help="A real run's results (results/<grid>.jsonl): print each cell's prediction beside its "
                   "measured seconds.")
@_plugin_option
def estimate(grid_name: str, data_dir: Path | None, device: str, workers: int, limit: int | None, synthetic: bool,
             against: Path | None, plugins: tuple[Path, ...]) -> None:
    """Predict a grid's wall time from its smoke run, every piece timed here and scaled to the real budget."""
    import tempfile

    from bench.run.estimate import compare_report, format_report
    from bench.run.estimate import estimate as run_estimate
    from bench.run.runner import RunOptions
    from bench.spec import grid as grids
    from bench.track.results import load_records

    if workers < 1:
        raise BenchError(f"--gpus / --workers must be at least 1, got {workers}")
    measured = load_records(against) if against is not None else None
    spec = grids.load(grid_name)
    _load_plugins(plugins, spec)
    with tempfile.TemporaryDirectory(prefix="bench-estimate-") as tmp:  # time real training, not cache hits
        opts = RunOptions(data_dir=data_dir, cache_dir=Path(tmp) / "cache", results_dir=Path(tmp) / "results",
                          tracking=False, device=device, limit=limit, download=False, synthetic=synthetic,
                          progress=False, log_samples=False, budget="smoke")
        rep = run_estimate(spec, opts, workers)
        click.echo(format_report(rep))
        if measured is not None:
            click.echo(f"\nagainst {against}:\n" + compare_report(rep, measured))


@cli.command("list")
@click.argument("what", type=click.Choice(LISTABLE))
@click.option("--json", "as_json", is_flag=True, help="One JSON array of {name, description, origin, ...} objects.")
@_plugin_option
def list_(what: str, as_json: bool, plugins: tuple[Path, ...]) -> None:
    """List registered attacks, defenses, datasets, architectures or grids (plugins marked)."""
    _load_plugins(plugins)
    rows = _list_rows(what)
    if as_json:
        import json

        click.echo(json.dumps(rows, indent=1))
        return
    for row in rows:
        origin = "" if row["origin"] == "builtin" else f"  [{row['origin']}]"
        if what == "defenses":
            click.echo(f"{row['name']:20s} {row['kind']:8s} {row['description']}{origin}")
        elif what == "grids":
            count = f"{row['cells']:4d} cells" if row["cells"] is not None else f"   ? cells ({row['cells_error']})"
            click.echo(f"{row['name']:28s} {row['dataset']:14s} {count}  {row['description']}")
        else:
            click.echo(f"{row['name']:20s} {row['description']}{origin}")


def _list_rows(what: str) -> list[dict]:
    """``bench list``'s entries as dicts: name, description (the docstring's first paragraph, see
    bench.core.registry.describe), origin, and per kind: a defense's kind, a grid's dataset and cells."""
    from bench.core.registry import describe

    if what == "grids":
        from bench.spec import grid as grids

        rows = []
        for name in grids.GRIDS.list_names():
            spec = grids.load(name)
            row = {"name": name, "description": spec.description, "origin": grids.GRIDS.origin(name),
                   "dataset": spec.dataset, "cells": None, "cells_error": None}
            try:
                row["cells"] = len(spec.cells())
            except BenchError as exc:  # e.g. a checkpoint under $BENCH_WEIGHTS_DIR, which is not set
                row["cells_error"] = str(exc)
            rows.append(row)
        return rows
    if what == "attacks":
        import attacks

        registry = attacks.ATTACKS
    elif what == "defenses":
        import defenses

        registry = defenses.DEFENSES
    elif what == "datasets":
        from bench.core.data import DATASETS as registry
    else:
        from bench.core.models import ARCHS as registry
    rows = []
    for name, obj in registry.items():
        row = {"name": name, "description": describe(obj), "origin": registry.origin(name)}
        if what == "defenses":
            row["kind"] = obj.kind
        rows.append(row)
    return rows


@cli.command("leaderboard")
@click.option("--grid", "grid_name", default="default", show_default=True, help="Grid name or .toml path.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Default: <results-dir>/leaderboards/<grid>.md, or leaderboards/<grid>.md with --publish.")
@click.option("--results-dir", type=click.Path(path_type=Path), default=Path("results"), show_default=True)
@click.option("--limit", type=int, default=None, help="The --limit the grid was run with, if any.")
@click.option("--seed", type=int, default=None, help="The --seed the grid was run with, if any.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="The --data-dir the grid was run with, if any (repeated in the Reproduce line).")
@click.option("--publish", is_flag=True,
              help="Write the tracked leaderboards/<grid>.md, its pictures, a copy of its records "
                   "(leaderboards/<grid>/records.jsonl) and the index leaderboards/README.md.")
@click.option("--regenerate", is_flag=True,
              help="Rebuild the published board from its own records (leaderboards/<grid>/records.jsonl) "
                   "instead of a local run's, e.g. after editing its notes; implies --publish. Pass the "
                   "--limit and --data-dir it was run with, for its Reproduce line.")
@click.option("--all", "all_grids", is_flag=True,
              help="Every built-in grid with results, then the index of the folder written to.")
def leaderboard_(grid_name: str, out: Path | None, results_dir: Path, limit: int | None, seed: int | None,
                 data_dir: Path | None, publish: bool, regenerate: bool, all_grids: bool) -> None:
    """Render results/<grid>.jsonl as a Markdown leaderboard (printed and written to a file)."""
    from bench.report.board_index import write_index
    from bench.report.reproductions import write_reproductions
    from bench.track.results import load_records

    publish = publish or regenerate
    if all_grids:
        from bench.spec import grid as grids

        for name in grids.GRIDS.list_names():
            if _records_path(name, results_dir, regenerate).is_file():
                spec, records = _spec_records(name, results_dir, None, None, regenerate)
                click.echo(f"written {_write_leaderboard(spec, records, None, results_dir, publish)}")
        folder = _board_dir(results_dir, publish)
        folder.mkdir(parents=True, exist_ok=True)
        click.echo(f"written {write_index(folder)}")
        if publish and (page := write_reproductions(folder, load_records)) is not None:
            click.echo(f"written {page}")
        return
    spec, records = _spec_records(grid_name, results_dir, limit, seed, regenerate)
    if publish and not records:
        raise BenchError(f"no finished cells of grid {spec.name} in {Path(results_dir) / (spec.name + '.jsonl')}; "
                         "run it first (bench run --grid ...), then publish")
    path = _write_leaderboard(spec, records, out, results_dir, publish, limit, data_dir)
    click.echo(path.read_text())
    click.echo(f"written to {path}", err=True)
    if publish and out is None:
        click.echo(f"written {write_index(path.parent)}", err=True)
        if (page := write_reproductions(path.parent, load_records)) is not None:
            click.echo(f"written {page}", err=True)


@cli.command("site")
@click.option("--out", type=click.Path(path_type=Path), default=Path("site"), show_default=True,
              help="Folder for the pages (index.html and one <grid>.html per board).")
@click.option("--grid", "grid_names", multiple=True,
              help="Built-in grid name or .toml path (repeatable). Default: default.")
@click.option("--all", "all_grids", is_flag=True, help="Every built-in grid with records.")
@click.option("--results-dir", type=click.Path(path_type=Path), default=Path("results"), show_default=True,
              help="Local records (<grid>.jsonl), read before the published leaderboards/<grid>/records.jsonl.")
@click.option("--leaderboards-dir", type=click.Path(path_type=Path), default=Path("leaderboards"), show_default=True,
              help="Published boards: records.jsonl, hand-written notes and extra figures.")
@click.option("--limit", type=int, default=None, help="The --limit the grid was run with, if any.")
@click.option("--seed", type=int, default=None, help="The --seed the grid was run with, if any.")
@click.option("--figures/--no-figures", default=True, show_default=True, help="Draw the pictures into the pages.")
def site(out: Path, grid_names: tuple[str, ...], all_grids: bool, results_dir: Path, leaderboards_dir: Path,
         limit: int | None, seed: int | None, figures: bool) -> None:
    """Write a static leaderboard site: one self-contained HTML page per board plus index.html."""
    from bench.report.leaderboard import notes_path
    from bench.report.site import BoardInput, records_source, write_site
    from bench.spec import grid as grids
    from bench.track.results import load_records

    if all_grids and grid_names:
        raise BenchError("give --grid or --all, not both")
    specs = ([grids.load(n) for n in grids.GRIDS.list_names()] if all_grids
             else [grids.load(n) for n in (grid_names or ("default",))])
    boards = []
    for spec in specs:
        source = records_source(spec.name, results_dir, leaderboards_dir)
        if source is None:
            if all_grids:
                continue
            raise BenchError(f"no records for grid {spec.name} in {results_dir}/{spec.name}.jsonl or "
                             f"{leaderboards_dir}/{spec.name}/records.jsonl; run `bench run --grid {spec.name}` first")
        records = load_records(source)
        if source.parent == Path(results_dir):  # a results file holds every run of the grid: keep this one's cells
            wanted = {c.cell_id for c in spec.cells(limit=limit, seed=seed)}
            mine = [r for r in records if r.get("cell_id") in wanted]
            if records and not mine:
                why = (f"no record in {source} matches the cells of grid {spec.name} at this --limit and --seed; "
                       "pass the --limit and --seed the grid was run with")
                if not all_grids:
                    raise BenchError(why)
                click.echo(f"skipped: {why}", err=True)
                continue
            records = mine
        notes = notes_path(Path(leaderboards_dir) / f"{spec.name}.md")
        boards.append(BoardInput(spec, records, notes.read_text(encoding="utf-8") if notes.is_file() else None,
                                 Path(leaderboards_dir) / spec.name, str(source)))
    if not boards:
        raise BenchError(f"no grid has records in {results_dir}/ or {leaderboards_dir}/<grid>/records.jsonl; "
                         "run `bench run` first")
    written = write_site(boards, out, figures)
    click.echo(f"{len(boards)} board(s) written; open {written[0]}")


@cli.command("plot")
@click.option("--grid", "grid_name", required=True)
@click.option("--results-dir", type=click.Path(path_type=Path), default=Path("results"), show_default=True)
@click.option("--out-dir", type=click.Path(path_type=Path), default=None,
              help="Default: <results-dir>/leaderboards/<grid>/ (beside the local board), or "
                   "leaderboards/<grid>/ with --publish.")
@click.option("--publish", is_flag=True, help="Write beside the published board (leaderboards/<grid>/, tracked).")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="The run's cache (model, D', adversarial examples), for neighbour-labels figures.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
@click.option("--limit", type=int, default=None, help="The --limit the grid was run with, if any.")
@click.option("--seed", type=int, default=None, help="The --seed the grid was run with, if any.")
@click.option("--tracking-uri", default=None, help="MLflow store (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db).")
@click.option("--no-tracking", is_flag=True, help="Do not log the pictures to MLflow.")
def plot(grid_name: str, results_dir: Path, out_dir: Path | None, publish: bool, cache_dir: Path | None,
         data_dir: Path | None, limit: int | None, seed: int | None, tracking_uri: str | None,
         no_tracking: bool) -> None:
    """Draw the figures the grid lists in [[figures]] (PNG), from results/<grid>.jsonl."""
    from bench.report.grid_figures import write_grid_figures
    from bench.run.neighbour_figure import neighbour_series

    spec, records = _spec_records(grid_name, results_dir, limit, seed)
    if not spec.figures:
        raise BenchError(f"grid {spec.name} lists no [[figures]]; add tables such as [[figures]] kind = \"vs-points\" "
                         "(see bench/report/grid_figures.py)")
    folder = Path(out_dir) if out_dir else inside(_board_dir(results_dir, publish), spec.name)
    written = []
    for fig, path, note in write_grid_figures(
            spec, records, folder, lambda s, f: neighbour_series(s, f, cache_dir, data_dir)):
        click.echo(f"{fig['name']}: {path if path else 'not drawn'}{f' ({note})' if note else ''}")
        if path:
            written.append(path)
    if written and not no_tracking:
        from bench.track.tracker import log_leaderboard

        try:
            log_leaderboard(spec.name, written, tracking_uri)
        except Exception as exc:  # the PNGs are written; say why MLflow lacks them
            click.echo(f"warning: MLflow logging of the figures failed ({type(exc).__name__}: {exc}"[:300] + ")",
                       err=True)


@cli.command()
@click.option("--grid", "grid_name", required=True)
@click.option("--baseline", type=click.Path(path_type=Path), required=True)
@click.option("--tolerance", type=float, default=5.0, show_default=True, help="Allowed drift in accuracy points.")
@click.option("--results-dir", type=click.Path(path_type=Path), default=Path("results"), show_default=True)
@click.option("--write-baseline", is_flag=True, help="Write the current results as the new baseline instead.")
def check(grid_name: str, baseline: Path, tolerance: float, results_dir: Path, write_baseline: bool) -> None:
    """Fail (exit 1) when a cell failed or drifted beyond --tolerance points from the baseline."""
    from bench.report.check import compare
    from bench.report.check import write_baseline as write

    if tolerance < 0:
        raise BenchError(f"--tolerance must be non-negative, got {tolerance}")
    _, records = _spec_records(grid_name, results_dir, None, None)
    if write_baseline:
        write(records, baseline)
        click.echo(f"baseline with {len(records)} cells written to {baseline}")
        return
    problems = compare(records, baseline, tolerance)
    if problems:
        click.echo(f"check failed: {len(problems)} problem(s)", err=True)
        for p in problems:
            click.echo(f"  {p}", err=True)
        sys.exit(1)
    click.echo(f"check passed: {len(records)} cells within {tolerance:g} points of {baseline}")


def _attack_override(values: tuple[str, ...]) -> dict[str, object]:
    """``--set KEY=VALUE`` pairs as attack parameters (VALUE read as a TOML value, else a string)."""
    import tomllib

    out: dict[str, object] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise BenchError(f"--set takes KEY=VALUE (an attack parameter, e.g. steps=1), got {item!r}")
        try:
            out[key.strip()] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = raw
    return out


@cli.command()
@click.option("--grid", "grid_name", default="default", show_default=True, help="The grid whose settings are tested.")
@click.option("--defense", required=True,
              help="A train-time defense (met with no runtime defense) or a runtime defense of the grid.")
@click.option("--attack", required=True, help="An attack of the grid, by name or label (pgd, bpda, eot, ...).")
@click.option("--threat", type=click.Choice(["base", "adaptive", "transfer"]), default=None,
              help="Only the grid's cells of this threat model (default: every one of the attack).")
@click.option("--eps", type=float, default=None,
              help="Only the cells at this eps; for a minimal-norm attack (deepfool, cw-l2) the ball to test in.")
@click.option("--n", "n", type=int, default=50, show_default=True, help="Test points (the first N of the split).")
@click.option("--inner", type=int, default=999, show_default=True, help="Inner points per test point, x included.")
@click.option("--boundary", type=int, default=10, show_default=True,
              help="Boundary points per test point (the authors used 1; the README says why 10).")
@click.option("--random", "random_draws", type=int, default=100, show_default=True,
              help="Uniform draws in the ball per test point for the random baseline.")
@click.option("--closeness", type=float, default=0.999, show_default=True,
              help="How far the readout's decision boundary moves towards the boundary points, in [0, 1).")
@click.option("--repeats", type=int, default=None,
              help="Feature draws per point of a random defense (default 2; 1 for deterministic ones).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Change an attack parameter for this test (repeatable), e.g. --set steps=1.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sampled points.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON instead of a table.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Where trained models are cached (default: $BENCH_CACHE_DIR or .bench-cache, as bench run).")
@click.option("--synthetic", is_flag=True, help="Seeded stand-ins for splits whose files are missing.")
@_plugin_option
def verify(grid_name: str, defense: str, attack: str, threat: str | None, eps: float | None, n: int, inner: int,
           boundary: int, random_draws: int, closeness: float, repeats: int | None, overrides: tuple[str, ...],
           seed: int, as_json: bool, data_dir: Path | None, cache_dir: Path | None, synthetic: bool,
           plugins: tuple[Path, ...]) -> None:
    """Binarization test (Zimmermann et al., NeurIPS 2022): does the attack find an adversarial example
    where one provably exists?

    Per test point, a linear two-class readout on the defended model's penultimate features (after a
    purifier, for median / tvm / ride) separates points near x from points on the eps ball's surface,
    and replaces the model's last layer; the attack, configured and run as the grid runs it, must
    reach the readout's class 1 inside the ball. Prints success with its 95% Wilson interval, the
    random-sampling baseline and the discarded points (no exact separation). A pass is >= 95%.

    Exit 0: every tested configuration passes; 1: one fails; 2: bad input, or the test does not apply
    (kNN defenses and RMC, transfer attacks, L0 attacks), said in one line.

    Example: bench verify --grid default --defense standard --attack pgd --eps 0.1 --n 50
    """
    import json

    from bench.core.cache import default_cache_dir
    from bench.run.artifacts import ArtifactStore
    from bench.run.options import RunOptions
    from bench.run.verify import Settings, render, run_cell, select_cells
    from bench.spec import grid as grids

    for name, value, least in (("--n", n, 1), ("--inner", inner, 1), ("--boundary", boundary, 1),
                               ("--random", random_draws, 1), ("--repeats", repeats, 1)):
        if value is not None and value < least:
            raise BenchError(f"{name} must be at least {least}, got {value}")
    if not 0 <= closeness < 1:
        raise BenchError(f"--closeness must lie in [0, 1), got {closeness}")
    if eps is not None and eps <= 0:
        raise BenchError(f"--eps must be positive, got {eps}")
    spec = grids.load(grid_name)
    _load_plugins(plugins, spec)
    cells = select_cells(spec, defense, attack, threat, eps)
    settings = Settings(n=n, inner=inner, boundary=boundary, random=random_draws, closeness=closeness,
                        repeats=repeats, eps=eps, seed=seed)
    store = ArtifactStore(spec, RunOptions(data_dir=data_dir, cache_dir=cache_dir or default_cache_dir(),
                                           synthetic=synthetic, tracking=False), limit=None)
    from tqdm.auto import tqdm

    outcomes = []
    bars: dict[str, tqdm] = {}

    def progress(key: str, done: int, total: int) -> None:  # a bar once a point is tested: refusals stay one line
        if key not in bars:
            bars[key] = tqdm(total=total, desc=key, unit="point", leave=False, disable=as_json)
        bars[key].update(done - bars[key].n)

    # what runs writes (a model's training line) goes to stderr, so stdout is the table or the JSON alone
    with contextlib.redirect_stdout(sys.stderr):
        for cell in cells:
            outcomes.append(run_cell(store, cell, settings, _attack_override(overrides),
                                     progress=lambda done, total, key=cell.key: progress(key, done, total)))
            if cell.key in bars:
                bars.pop(cell.key).close()
    if all(o.refused for o in outcomes):
        raise BenchError(f"the binarization test does not apply: {outcomes[0].refused}")
    if as_json:
        click.echo(json.dumps([o.as_dict() for o in outcomes], indent=2))
    else:
        click.echo(render(outcomes))
    sys.exit(0 if all(o.passed for o in outcomes if not o.refused) else 1)


@cli.group("cache")
def cache_() -> None:
    """Inspect and clean the artifact cache (models, D', adversarial examples)."""


_cache_dir_option = click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
                                 help="Default: $BENCH_CACHE_DIR or .bench-cache.")


def _cache_dir(cache_dir: Path | None) -> Path:
    """The cache folder, refused (one line, exit 2) unless it holds advbench's CACHEDIR.TAG."""
    from bench.core.cache import default_cache_dir, require_cache

    return require_cache(cache_dir or default_cache_dir())


@cache_.command("ls")
@_cache_dir_option
@click.option("--verify", is_flag=True, help="Check every entry's sha256 (reads every file).")
def cache_ls(cache_dir: Path | None, verify: bool) -> None:
    """List cache entries: kind, size, days since last use, status, path."""
    from bench.core.cache import human, scan

    root = _cache_dir(cache_dir)
    entries = scan(root, verify=verify)
    for e in entries:
        click.echo(f"{e.kind:12s} {human(e.size):>10s} {e.age_days:7.1f}d  {e.status:10s} {e.path}")
    click.echo(f"{len(entries)} entries in {root}", err=True)


@cache_.command("du")
@_cache_dir_option
def cache_du(cache_dir: Path | None) -> None:
    """Disk use per kind of artifact, and in total."""
    from bench.core.cache import human, scan

    totals: dict[str, tuple[int, int]] = {}
    for e in scan(_cache_dir(cache_dir)):
        n, size = totals.get(e.kind, (0, 0))
        totals[e.kind] = (n + 1, size + e.size)
    for kind, (n, size) in sorted(totals.items()):
        click.echo(f"{kind:12s} {n:6d} entries {human(size):>10s}")
    click.echo(f"{'total':12s} {sum(n for n, _ in totals.values()):6d} entries "
               f"{human(sum(s for _, s in totals.values())):>10s}")


def _confirm_all(root: Path, count: int, size: str) -> None:
    """Ask before ``gc --all``; refuse (one line, exit 2) when there is no terminal to ask on."""
    what = f"all {count} entries ({size}) of the cache {root}"
    if sys.stdin is None or not sys.stdin.isatty():
        raise BenchError(f"gc --all would remove {what} and there is no terminal to confirm on; pass --yes")
    if not click.confirm(f"remove {what}?", default=False):
        click.echo("nothing removed", err=True)
        sys.exit(1)


@cache_.command("gc")
@_cache_dir_option
@click.option("--older-than", type=float, default=None, metavar="DAYS", help="Also remove entries unused for DAYS.")
@click.option("--all", "everything", is_flag=True, help="Remove every advbench entry in the cache (asks first).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before --all.")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
def cache_gc(cache_dir: Path | None, older_than: float | None, everything: bool, yes: bool, dry_run: bool) -> None:
    """Remove temporary leftovers, partial or corrupt entries (checksums verified), and optionally
    old entries or everything; only entries advbench writes, never other files in the folder."""
    from bench.core.cache import gc_candidates, human, remove, scan

    if older_than is not None and older_than < 0:
        raise BenchError(f"--older-than must be non-negative, got {older_than}")
    root = _cache_dir(cache_dir)
    doomed = gc_candidates(scan(root, verify=True), older_than, everything)
    freed = human(sum(e.size for e, _ in doomed))
    if everything and doomed and not (dry_run or yes):
        _confirm_all(root, len(doomed), freed)
    for e, why in doomed:
        click.echo(f"{'would remove' if dry_run else 'removed'} {e.path} ({why}, {human(e.size)})")
        if not dry_run:
            remove(e)
    click.echo(f"{len(doomed)} entries, {freed} {'would be freed' if dry_run else 'freed'}")


@cli.command("track")
@click.option("--grid", "grid_name", required=True, help="Grid name or .toml path whose outbox to replay.")
@click.option("--results-dir", type=click.Path(path_type=Path), default=Path("results"), show_default=True)
@click.option("--tracking-uri", default=None, help="Default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
@click.option("--verbose", is_flag=True, help="Show MLflow's own console lines and log messages.")
def track(grid_name: str, results_dir: Path, tracking_uri: str | None, verbose: bool) -> None:
    """Replay the tracking outbox (cells MLflow missed during an outage) into MLflow; idempotent."""
    from bench.spec import grid as grids
    from bench.track.outbox import replay

    try:
        name = grids.load(grid_name).name
    except BenchError:
        if not (Path(results_dir) / f"{grid_name}.outbox.jsonl").is_file():
            raise
        name = grid_name  # the grid's name as in results/ (its .toml may live elsewhere)
    done, _ = replay(results_dir, name, tracking_uri, verbose=verbose)
    if done:
        click.echo(f"replayed {done} cells into MLflow; the outbox of {name} is empty")
    else:
        click.echo(f"nothing to replay: the outbox of {name} in {results_dir} is empty")


cli.add_command(track, "sync")


@cli.command()
@click.option("--tracking-uri", default=None, help="Default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
@click.option("--port", type=int, default=5000, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Server worker processes (one serves a person browsing).")
@click.option("--verbose", is_flag=True, help="Show the server's own log lines and warnings.")
def ui(tracking_uri: str | None, port: int, workers: int, verbose: bool) -> None:
    """Start the MLflow UI on 127.0.0.1 for the tracking store."""
    from bench.track.tracker import tracking_uri as resolve
    from bench.track.ui import serve

    uri = resolve(tracking_uri)
    click.echo(f"MLflow UI for {mask_secrets(uri)} at http://127.0.0.1:{port} (Ctrl-C to stop)")
    code = serve(uri, port, workers, verbose, lambda line: click.echo(mask_secrets(line), err=True))
    if code not in (0, -2, -15):  # not a stop by Ctrl-C or SIGTERM: the lines above say why
        sys.exit(2)


def _crash_report(exc: BaseException) -> str:
    """Save the traceback of a crash (a bug, not bad input) to a new file in the temp folder; returns
    the one line for stderr, naming the file."""
    import tempfile
    import time
    import traceback

    text = str(exc).strip()
    what = mask_secrets(f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__)[:200]
    try:
        fd, path = tempfile.mkstemp(prefix=f"bench-crash-{time.strftime('%Y%m%d-%H%M%S')}-", suffix=".log")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(mask_secrets(f"{' '.join(['bench', *sys.argv[1:]])}\nPython {sys.version}\n\n"
                                 + "".join(traceback.format_exception(exc))))
    except OSError as err:
        return f"error: internal error ({what}); its traceback could not be saved ({err.strerror or err})"
    return f"error: internal error ({what}); traceback saved to {path} (please attach it to a bug report)"


def _after_signal() -> None:
    """An error raised after Ctrl-C or SIGTERM arrived is the signal's doing, not a bug or bad input:
    the interrupt can land inside a C extension's import (numpy's), which turns it into an ImportError
    that a library's ``except ImportError`` swallows, and a later import then fails ("cannot load module
    more than once per process", a RecursionError). End as the signal would: one line, exit 130."""
    import signal

    if _STOP["signum"]:
        _stopped(Terminated() if _STOP["signum"] == signal.SIGTERM else KeyboardInterrupt(),
                 "finished cells are saved")


def main() -> None:
    """Entry point, never a traceback on the console: bad input is one line on stderr and exit code 2;
    Ctrl-C and SIGTERM one line and 130; a crash (a bug) one line naming the file with its traceback
    and 3. Exit code 1 is the commands' own: some cell failed."""
    _STOP.update(signum=0, said=False)
    try:
        with _signals_as_interrupt():
            cli.main(standalone_mode=False)
    except BenchError as exc:
        _after_signal()
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except _Interrupted as exc:  # landed outside a run, which says how many cells it saved
        _stopped(exc.args[0], "finished cells are saved")
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        _after_signal()
        exc.show()
        sys.exit(2)
    except KeyboardInterrupt as exc:
        _stopped(exc, "finished cells are saved")
    except OSError as exc:  # an I/O failure no specific check named: still one line, never a traceback
        _after_signal()
        where = f" ({exc.filename})" if exc.filename else ""
        click.echo(f"error: {exc.strerror or exc}{where}; finished cells are saved, rerun to resume", err=True)
        sys.exit(2)
    except Exception as exc:
        _after_signal()
        click.echo(_crash_report(exc), err=True)
        sys.exit(3)


if __name__ == "__main__":
    main()
