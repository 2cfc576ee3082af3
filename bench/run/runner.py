"""The grid runner: plan the cells of a grid, then run them with an executor and record each.

Orchestration only: the artifacts the cells share (data, models, runtime defenses, attacks,
adversarial examples) live in bench.run.artifacts, one cell's evaluation (craft, audit, stream
prediction, scoring) in bench.run.evaluation. Per cell, one record goes to results/<grid>.jsonl and one
nested MLflow run; finished cells are skipped on the next run; a cell that raises is recorded as
failed and the grid goes on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

import attacks
import defenses
from bench.core import models
from bench.core.cache import mark_cache
from bench.core.device import resolve as resolve_device
from bench.core.errors import BenchError
from bench.core.paths import inside
from bench.core.version import code_version
from bench.core.zoo import is_zoo_name
from bench.report.flags import cell_flags
from bench.run import progress, user_model
from bench.run.artifacts import ArtifactStore, resolve_params
from bench.run.claims import CellClaims
from bench.run.evaluation import Evaluator, cell_fields, cell_threads, failure, fix_threads
from bench.run.local_executor import LocalExecutor
from bench.run.options import RunOptions
from bench.run.stream_batch import resolve_stream_batch
from bench.run.workers import defer_busy, rotate
from bench.spec import sources
from bench.spec.grid import Cell, GridSpec
from bench.spec.plugins import load_files as load_plugin_files
from bench.spec.validate import check_spec
from bench.track.results import ResultStore
from bench.track.tracker import Tracker

__all__ = ["LocalExecutor", "Plan", "RunOptions", "Runner", "Summary", "cell_threads", "code_version",
           "fix_threads", "resolve_params", "unavailable_reason"]


@dataclass
class Plan:
    todo: list[Cell]
    done: list[Cell]
    skipped: list[tuple[Cell, str]]


@dataclass
class Summary:
    ran: int = 0
    failed: int = 0
    skipped_done: int = 0
    skipped_unavailable: int = 0
    results_path: Path | None = None
    failures: list[str] = field(default_factory=list)
    claimed_elsewhere: int = 0  # cells another live run was computing
    queued: int = 0  # cells whose MLflow payload waits in the outbox
    crashed_workers: int = 0  # --jobs worker processes that died (exit code other than 0 / 1)


_KIND = {"train": "train-time", "runtime": "runtime"}


def unavailable_reason(cell: Cell) -> str | None:
    """Why a cell cannot run with what is registered (None when it can)."""
    for name, kind in ((cell.train_defense, "train"), (cell.runtime_defense, "runtime")):
        if kind == "train" and (is_zoo_name(name) or sources.is_provided(cell.train_params)):
            continue
        if name not in defenses.DEFENSES:
            return f"{_KIND[kind]} defense {name!r} is not registered (optional = true: skipped)"
        if defenses.kind_of(name) != kind:
            return f"{name!r} is a {_KIND[defenses.kind_of(name)]} defense, listed as a {_KIND[kind]} one"
    if cell.attack not in attacks.ATTACKS:
        return f"attack {cell.attack!r} is not registered (optional = true: skipped)"
    cls = attacks.ATTACKS.get(cell.attack)
    if getattr(cls, "needs_defense", False) and cell.threat != "adaptive":
        return f"attack {cell.attack!r} is defense-aware: it needs threat = \"adaptive\""
    allowed = getattr(cls, "applies_to", None)
    if allowed and not defenses.applies(allowed, cell.runtime_defense):
        return f"attack {cell.attack!r} applies only to runtime defenses {defenses.describe(allowed)}"
    if cell.threat == "transfer" and cell.surrogate.get("arch") and cell.surrogate["arch"] not in models.ARCHS:
        return f"surrogate architecture {cell.surrogate['arch']!r} is not registered"
    return None


class Runner:
    """Plans a grid's cells and runs them: ``plan()``, ``preflight()``, ``run(executor)``."""

    #: The parts a run is made of; subclasses swap them (bench.run.estimate times them).
    artifact_store = ArtifactStore
    evaluator = Evaluator

    def __init__(self, spec: GridSpec, options: RunOptions | None = None) -> None:
        self.spec = spec
        self.opt = options or RunOptions()
        if self.opt.limit is not None and self.opt.limit <= 0:
            raise BenchError(f"--limit must be positive, got {self.opt.limit}")
        load_plugin_files(spec.plugins)
        check_spec(spec)
        for params in spec.resolved_train().values():
            if sources.is_provided(params):
                user_model.check(params, spec.base_dir)
        trained = [t for t, p in spec.train.items() if not is_zoo_name(t) and not sources.is_provided(p)]
        if trained and spec.arch not in models.ARCHS:
            models.ARCHS.get(spec.arch)  # raises a BenchError listing the valid names
        self.cells = spec.cells(limit=self.opt.limit, seed=self.opt.seed)
        if not self.cells:
            raise BenchError(f"grid {spec.name!r} has no cells: add [train], [runtime] and [[attacks]] entries")
        limits = {c.limit for c in self.cells}  # a runtime's own limit makes its cells read a prefix
        limit = None if (None in limits or not limits) else max(limits)
        if spec.train_split == "test" and (limit is None or limit > spec.train_offset):
            raise BenchError(f"{spec.name}: the training stand-in starts at test image {spec.train_offset}, so "
                             f"evaluate at most that many test points (--limit {spec.train_offset})")
        self.store = ResultStore(inside(self.opt.results_dir, f"{spec.name}.jsonl"))
        self.artifacts = self.artifact_store(spec, self.opt, limit)
        self.evaluation = self.evaluator(spec, self.artifacts)
        self.tracker: Tracker | None = None
        #: The grid's progress bar while cells run (bench.run.progress), else None.
        self.bar: Any = None
        #: The MLflow parent run the cells went under (None: tracking off, or nothing ran).
        self.parent_run_id: str | None = None

    @property
    def device(self) -> torch.device:
        return self.artifacts.device

    @property
    def test(self) -> Any:
        return self.artifacts.test

    # -- planning --------------------------------------------------------------------------------
    def plan(self) -> Plan:
        todo, done, skipped = [], [], []
        for cell in self.cells:
            reason = unavailable_reason(cell)
            if reason:
                skipped.append((cell, reason))
            elif self.store.finished(cell.cell_id):
                done.append(cell)
            else:
                todo.append(cell)
        return Plan(todo, done, skipped)

    def setup(self) -> None:
        """Device, seed and test data: what running cells in this process needs."""
        self.artifacts.device = resolve_device(self.opt.device)
        torch.manual_seed(self.cells[0].seed)
        self.artifacts.setup_data()

    def preflight(self, todo: list[Cell]) -> list[str]:
        """Before any cell runs: the device, the test split, and the training split where some cell
        needs it (a model to train that is not cached, a runtime defense with a database). Raises a
        one-line BenchError for the first missing piece; returns what was checked."""
        art = self.artifacts
        resolve_device(self.opt.device)
        art.setup_data()
        checked = [f"device {self.opt.device}", f"{self.spec.dataset} test split ({len(art.test)} images)"]
        why = art.train_needed(todo)
        if why:
            train = art.train_set()
            checked.append(f"{self.spec.dataset} {self.spec.train_split} split ({len(train)} images, for {why})")
        return checked

    # -- running ---------------------------------------------------------------------------------
    def run(self, executor: Any = None) -> Summary:
        """Run the unfinished cells with ``executor`` (default: in this process, one after another).

        Runs sharing a results folder split the work: each cell is claimed (bench.run.claims) before it
        runs and skipped when another live run holds it or has finished it meanwhile. A record is
        merged into the results file under its lock. Tracking never fails a cell: payloads MLflow did
        not take stay in the outbox (bench.track.outbox) for ``bench track``. A full or read-only disk
        stops the run with a DiskError; Ctrl-C leaves every finished record in place."""
        executor = executor or LocalExecutor()
        plan = self.plan()
        summary = self.summary = Summary(skipped_done=len(plan.done), skipped_unavailable=len(plan.skipped),
                                         results_path=self.store.path)  # read by the CLI after a Ctrl-C
        for cell, reason in plan.skipped:
            tqdm.write(f"skip {cell.key}: {reason}")
        if not plan.todo:
            tqdm.write(f"nothing to do: {len(plan.done)} cells already finished in {self.store.path}")
            return summary
        self.preflight(plan.todo)
        self.store.check_writable()
        mark_cache(self.opt.cache_dir)  # `bench cache gc` works only on a folder that says it is a cache
        executor.start(self)
        order = plan.todo if self.opt.worker is None else rotate(plan.todo, *self.opt.worker)
        with CellClaims(self.store, self.spec.name, announce=self.opt.worker is None) as claims:
            if executor.name == "local":  # the batcher looks ahead in this process's own queue
                batcher = self.evaluation.batcher
                batcher.size = resolve_stream_batch(self.opt.stream_batch, self.device)
                batcher.upcoming, batcher.reserve = list(order), claims.reserve
            try:
                # a --jobs worker skips ahead of cells whose model another worker is training
                lazy = order if self.opt.worker is None else defer_busy(order, self.artifacts.model_busy)
                self._record_all(executor, claims, lazy, len(plan.todo), summary)
            finally:
                summary.claimed_elsewhere += claims.elsewhere
                summary.skipped_done += claims.finished_elsewhere
        self.store.set_flags(cell_flags)
        return summary

    def _record_all(self, executor: Any, claims: CellClaims, order: Iterable[Cell], todo: int,
                    summary: Summary) -> None:
        """Run the claimed cells and keep each record: the results file, MLflow (or its outbox), the console."""
        from bench.core.errors import DiskError
        from bench.track.outbox import Outbox, drain

        outbox = Outbox(self.store.path.parent, self.spec.name)
        with self.open_tracker(executor.device_label(self), executor.name, self.opt.parent_run_id) as tracker:
            self.tracker = self.artifacts.tracker = tracker
            self.parent_run_id = tracker.parent_id
            bar = self.bar = progress.grid_bar(self.spec.name, todo, self.opt.progress)
            try:
                with progress.cell_bars(self.opt.progress):
                    for i, (cell, record, sample) in enumerate(executor.run(self, claims.take(order)), 1):
                        bar.update(1)
                        if record["status"] != "ok" and record["error"].startswith("DiskError: "):
                            raise DiskError(record["error"][len("DiskError: "):])  # not the cell's fault: stop
                        self._keep(cell, record, sample, tracker, outbox, summary)
                        claims.release(cell.cell_id)  # after the mirror: a drain elsewhere leaves it alone
                        self._report(i, todo, cell, record, summary)
            finally:
                bar.close()
                self.bar = None
            if tracker.active and tracker.degraded is None and len(outbox):
                # Payloads left by an earlier outage or kill: the store works now, so catch up.
                replayed = drain(outbox, tracker)[0]
                if replayed:
                    tqdm.write(f"replayed {replayed} queued cells from {outbox.path} into MLflow")
            summary.queued = len(outbox) if tracker.active else 0

    def open_tracker(self, device: str, executor: str, parent_run_id: str | None = None,
                     **tags: str) -> Tracker:
        """The run's Tracker: it opens the MLflow parent run, or (``parent_run_id``) nests this process's
        cells under the one another process opened (bench.run.workers)."""
        return Tracker(self.spec.name, self.opt.tracking_uri, self.opt.tracking,
                       tags={"device": device, "executor": executor, "grid_path": self.spec.path,
                             "budget": self.opt.budget, **tags},
                       verbose=self.opt.verbose, warn=tqdm.write, parent_run_id=parent_run_id)

    def _keep(self, cell: Cell, record: dict[str, Any], sample: Any, tracker: Tracker, outbox: Any,
              summary: Summary) -> None:
        """One record into the results file and MLflow, write-ahead: the payload is queued before the
        record exists, so a kill at any point leaves either no record or one whose payload `bench track` has."""
        params = self._tracking_params(cell, record)
        if tracker.active:
            outbox.add(record, params)
        self.store.put(record)
        summary.ran += 1  # counted with the record, so an interrupt's "N cells saved" is exact
        if tracker.mirror(record, params, sample):
            outbox.remove(cell.cell_id)
        elif tracker.active and sample is not None:
            outbox.save_sample(cell.cell_id, sample)

    @staticmethod
    def _report(i: int, todo: int, cell: Cell, record: dict[str, Any], summary: Summary) -> None:
        status = (f"clean {100 * record['clean_acc']:.1f}%  robust {100 * record['robust_acc']:.1f}%"
                  if record["status"] == "ok" else f"FAILED: {record['error']}")
        tqdm.write(f"[{i}/{todo}] {cell.key}: {status} ({record['seconds']:.1f}s)")
        if record["status"] != "ok":
            summary.failed += 1
            summary.failures.append(f"{cell.key}: {record['error']}")

    def recount(self, plan: Plan) -> None:
        """After ``--jobs`` workers finished: count every process's cells from the results file (the
        summary of this process counted only its own) and refresh the reliability flags over them."""
        summary = self.summary
        self.store.reload()
        self.store.set_flags(cell_flags)
        finished = {c.cell_id for c in plan.todo if self.store.finished(c.cell_id)}
        failed = [c for c in plan.todo if c.cell_id not in finished and c.cell_id in self.store.records]
        summary.ran = len(finished) + len(failed)
        summary.skipped_done = len(plan.done)  # not the cells this process found finished by a worker
        summary.failed = len(failed)
        summary.failures = [f"{c.key}: {self.store.records[c.cell_id].get('error')}" for c in failed]
        summary.claimed_elsewhere = len(plan.todo) - summary.ran

    def run_cell(self, cell: Cell) -> dict[str, Any]:
        """One cell's record (never raises for the cell's own faults)."""
        if self.bar is not None:
            progress.running(self.bar, cell.key)
        return self.evaluation.run_cell(cell)

    def sample(self, cell: Cell, record: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Eight clean and adversarial images for MLflow (None for a failed cell)."""
        held = self.artifacts.adv_in_memory(self.artifacts.adv_key(cell)) if record["status"] == "ok" else None
        return (self.test.x[:8].cpu(), held[0][:8].cpu()) if (held is not None and self.opt.log_samples) else None

    def _tracking_params(self, cell: Cell, record: dict[str, Any]) -> dict[str, Any]:
        return {"dataset": cell.dataset, "arch": cell.arch, "train_defense": cell.train_defense,
                "runtime_defense": cell.runtime_defense, "attack": cell.attack, "threat": cell.threat,
                "eps": cell.eps, "limit": cell.limit, "seed": cell.seed, **{
                    f"attack.{k}": v for k, v in record.get("params", {}).get("attack", {}).items()}}

    def cell_fields(self, cell: Cell) -> dict[str, Any]:
        return cell_fields(cell, self.device)

    failure = staticmethod(failure)
