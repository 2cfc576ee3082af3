"""The grid runner: expand a spec into cells, build or load every artifact, attack, audit, record.

Per cell: the train-time defense's model (trained once, cached by config hash), the runtime defense
(prepared once per model), adversarial examples (crafted once per (model, attack, eps) for the
``base`` and ``transfer`` threat models, since they do not depend on the runtime defense), the audit,
then one record in results/<grid>.jsonl and one nested MLflow run. Finished cells are skipped on
the next run; a cell that raises is recorded as failed and the grid goes on.
"""

from __future__ import annotations

import functools
import inspect
import subprocess
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

import attacks
import defenses
from bench import __version__, audit, data, memory, models, sources, user_model
from bench.cache import atomic_torch_save, config_hash, default_cache_dir, torch_load_or_none
from bench.cache import lock as cache_lock
from bench.device import resolve as resolve_device
from bench.errors import AuditError, BenchError
from bench.grid import Cell, GridSpec
from bench.plugins import load_files as load_plugin_files
from bench.reliability import cell_flags, zero_grad_fraction
from bench.results import ResultStore
from bench.stream import stream_order
from bench.tracking import Tracker
from bench.validate import check_spec
from bench.zoo import is_zoo_name, load_robustbench


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """Package version plus the git commit when run from a checkout."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


def _finite_logits(predict: Any, name: str) -> Any:
    """Wrap a runtime defense's predict so NaN / inf logits fail the cell instead of scoring."""

    @functools.wraps(predict)
    def checked(x: torch.Tensor) -> torch.Tensor:
        logits = predict(x)
        if not torch.isfinite(logits).all():
            raise BenchError(f"non-finite logits (NaN or inf) from runtime defense {name!r}")
        return logits

    return checked


def cell_threads() -> int:
    """Intra-op threads per cell: ``$BENCH_NUM_THREADS``, else 1 (what a Ray worker gets)."""
    import os

    value = os.environ.get("BENCH_NUM_THREADS", "1")
    if not value.isdigit() or int(value) < 1:
        raise BenchError(f"BENCH_NUM_THREADS={value!r} is not a positive integer")
    return int(value)


def fix_threads() -> int:
    """Pin torch's and faiss's thread counts for a cell, so its numbers do not depend on the executor
    or the machine's core count (BLAS and oneDNN split their sums by thread; a Ray worker runs with
    one thread, the local process with one per core); returns the count."""
    n = cell_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    try:
        import faiss

        faiss.omp_set_num_threads(n)
    except ImportError:  # pragma: no cover - faiss is a dependency
        pass
    return n


def _interval_fields(rec: dict[str, Any]) -> dict[str, Any]:
    """95% Wilson intervals (bench.stats) of the clean and robust accuracy, as [low, high]."""
    from bench.stats import interval_of, wilson_interval

    out: dict[str, Any] = {}
    if rec["n"]:
        out["clean_ci"] = [round(v, 6) for v in wilson_interval(round(rec["clean_acc"] * rec["n"]), rec["n"])]
    robust = interval_of(rec["per_example"])
    if robust is not None:
        out["robust_ci"] = [round(v, 6) for v in robust]
    return out


def _minimal_norm_fields(x: torch.Tensor, x_adv: torch.Tensor, norm: str, flipped: torch.Tensor) -> dict[str, Any]:
    """For minimal-norm attacks: the median perturbation (in the attack's norm) and Deep Defense's
    rho_2 over the examples the attack flipped, and every example's norm (robust accuracy at a
    threshold, the RMC paper's Table 1 convention, is computed from these)."""
    norms = audit.perturbation_norms(x, x_adv, norm).cpu()
    delta = (x_adv - x).flatten(1)
    rho2 = (delta.norm(dim=1) / x.flatten(1).norm(dim=1).clamp_min(1e-12)).cpu()
    flipped = flipped.cpu()
    out: dict[str, Any] = {"n_flipped": int(flipped.sum()), "per_example_norm": [round(v, 5) for v in norms.tolist()]}
    if bool(flipped.any()):
        out["median_norm"] = round(float(norms[flipped].median()), 6)
        out["mean_rho2_success"] = round(float(rho2[flipped].mean()), 6)
    return out


@dataclass
class RunOptions:
    data_dir: Path | None = None
    cache_dir: Path = field(default_factory=default_cache_dir)
    results_dir: Path = Path("results")
    tracking_uri: str | None = None
    tracking: bool = True
    device: str = "auto"
    limit: int | None = None
    seed: int | None = None
    download: bool = False
    progress: bool = True
    log_samples: bool = True
    #: Seeded stand-ins of the dataset's shape for splits whose files are missing (smoke runs).
    synthetic: bool = False
    #: "full", or "smoke" (bench.smoke): tagged in MLflow.
    budget: str = "full"
    #: Models passed from Python (bench.evaluate), by train-time entry name (source = "object").
    provided_models: dict[str, torch.nn.Module] = field(default_factory=dict)
    verbose: bool = False


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


def _accepts(factory: Any, name: str) -> bool:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def resolve_params(factory: Any, family: str, given: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """Seed-paper defaults for the dataset family, then the grid's values, then run-level extras
    (seed, eps, cache_dir) where the factory accepts them."""
    params = dict(getattr(factory, "dataset_defaults", {}).get(family, {}))
    params.update(given)
    for k, v in extra.items():
        if v is not None and k not in given and _accepts(factory, k):
            params[k] = v
    return params


def unavailable_reason(cell: Cell) -> str | None:
    """Why a cell cannot run with what is registered (None when it can)."""
    for name, kind in ((cell.train_defense, "train"), (cell.runtime_defense, "runtime")):
        if kind == "train" and (is_zoo_name(name) or sources.is_provided(cell.train_params)):
            continue
        if name not in defenses.DEFENSES:
            return f"{kind}-time defense {name!r} is not registered (yet)"
        if defenses.kind_of(name) != kind:
            return f"{name!r} is a {defenses.kind_of(name)}-time defense, listed as {kind}-time"
    if cell.attack not in attacks.ATTACKS:
        return f"attack {cell.attack!r} is not registered (yet)"
    cls = attacks.ATTACKS.get(cell.attack)
    if getattr(cls, "needs_defense", False) and cell.threat != "adaptive":
        return f"attack {cell.attack!r} is defense-aware: it needs threat = \"adaptive\""
    allowed = getattr(cls, "applies_to", None)
    if allowed and cell.runtime_defense not in allowed:
        return f"attack {cell.attack!r} applies only to runtime defenses {', '.join(allowed)}"
    if cell.threat == "transfer" and cell.surrogate.get("arch") and cell.surrogate["arch"] not in models.ARCHS:
        return f"surrogate architecture {cell.surrogate['arch']!r} is not registered"
    return None


class Runner:
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
        limit = self.cells[0].limit if self.cells else None
        if spec.train_split == "test" and (limit is None or limit > spec.train_offset):
            raise BenchError(f"{spec.name}: the training stand-in starts at test image {spec.train_offset}, so "
                             f"evaluate at most that many test points (--limit {spec.train_offset})")
        self.store = ResultStore(Path(self.opt.results_dir) / f"{spec.name}.jsonl")
        self.family = data.family_of(spec.dataset)
        self._models: dict[str, tuple[torch.nn.Module, str]] = {}
        self._runtime: dict[tuple[str, str], Any] = {}
        self._clean: dict[tuple[str, str], torch.Tensor] = {}
        #: zero-gradient share of each base model on the test set: one backward pass per model, not per
        #: cell (on ImageNet it costs as much as a one-step attack)
        self._zero_grad: dict[str, float] = {}
        self._adv: dict[str, tuple[torch.Tensor, Any]] = {}
        self._failed_artifacts: dict[str, str] = {}
        self._train_set: data.Dataset | None = None
        self.test: data.Dataset | None = None
        self.device = torch.device("cpu")
        self.tracker: Tracker | None = None

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

    # -- running ---------------------------------------------------------------------------------
    def setup(self) -> None:
        """Device, seed and test data: what running cells in this process needs."""
        self.device = resolve_device(self.opt.device)
        torch.manual_seed(self.cells[0].seed)
        self.setup_data()

    def preflight(self, todo: list[Cell]) -> list[str]:
        """Before any cell runs: the device, the test split, and the training split where some cell
        needs it (a model to train that is not cached, a runtime defense with a database). Raises a
        one-line BenchError for the first missing piece; returns what was checked."""
        resolve_device(self.opt.device)
        self.setup_data()
        checked = [f"device {self.opt.device}", f"{self.spec.dataset} test split ({len(self.test)} images)"]
        why = self._train_needed(todo)
        if why:
            self.train_set()
            checked.append(f"{self.spec.dataset} {self.spec.train_split} split ({len(self._train_set)} images, "
                           f"for {why})")
        return checked

    def setup_data(self) -> None:
        if self.test is None:
            self.test = data.load(self.spec.dataset, "test", self.opt.data_dir, self.cells[0].limit,
                                  self.opt.download, self.opt.synthetic)

    def _train_needed(self, todo: list[Cell]) -> str | None:
        for cell in todo:
            if cell.runtime_defense in defenses.DEFENSES and getattr(
                    defenses.DEFENSES.get(cell.runtime_defense), "needs_train_set", False):
                return f"runtime defense {cell.runtime_defense}"
            trained = [(cell.arch, cell.train_defense, cell.train_params, cell.seed)]
            if cell.threat == "transfer":
                sur = cell.surrogate
                trained.append((sur.get("arch", cell.arch), sur.get("defense", "standard"), sur.get("params", {}),
                                int(sur.get("seed", cell.seed + 1))))
            for arch, name, params, seed in trained:
                if is_zoo_name(name) or sources.is_provided(params) or name not in defenses.DEFENSES:
                    continue
                key = self._model_key(arch, name, params, seed)
                if not (Path(self.opt.cache_dir) / "models" / f"{key}.pt").is_file():
                    return f"training {name}"
        return None

    def run(self, executor: Any = None) -> Summary:
        """Run the unfinished cells with ``executor`` (default: in this process, one after another).

        Runs sharing a results folder split the work: each cell is claimed (bench.locks) before it
        runs and skipped when another live run holds it or has finished it meanwhile. A record is
        merged into the results file under its lock. Tracking never fails a cell: payloads MLflow did
        not take stay in the outbox (bench.outbox) for ``bench track``. A full or read-only disk
        stops the run with a DiskError; Ctrl-C leaves every finished record in place."""
        from bench.errors import DiskError
        from bench.executors import LocalExecutor
        from bench.locks import CellClaim
        from bench.outbox import Outbox, drain

        executor = executor or LocalExecutor()
        plan = self.plan()
        summary = Summary(skipped_done=len(plan.done), skipped_unavailable=len(plan.skipped),
                          results_path=self.store.path)
        self.summary = summary  # read by the CLI after a Ctrl-C
        for cell, reason in plan.skipped:
            tqdm.write(f"skip {cell.key}: {reason}")
        if not self.cells:
            raise BenchError(f"grid {self.spec.name!r} has no cells: add [train], [runtime] and [[attacks]] entries")
        if not plan.todo:
            tqdm.write(f"nothing to do: {len(plan.done)} cells already finished in {self.store.path}")
            return summary
        self.preflight(plan.todo)
        self.store.check_writable()
        executor.start(self)
        folder = self.store.path.parent
        outbox = Outbox(folder, self.spec.name)
        claims: dict[str, CellClaim] = {}
        seen: set[str] = set()

        def claimed_cells() -> Any:
            """The planned cells this process claims, lazily (a local executor claims one at a time)."""
            for cell in plan.todo:
                if cell.cell_id in seen:  # the same cell listed twice in the grid
                    continue
                seen.add(cell.cell_id)
                claim = CellClaim(folder, self.spec.name, cell.cell_id)
                if not claim.acquire():
                    summary.claimed_elsewhere += 1
                    tqdm.write(f"skip {cell.key}: another run is computing it")
                    continue
                self.store.reload()
                if self.store.finished(cell.cell_id):  # another run finished it after our plan
                    claim.release()
                    summary.skipped_done += 1
                    continue
                claims[cell.cell_id] = claim
                yield cell

        with Tracker(self.spec.name, self.opt.tracking_uri, self.opt.tracking,
                     tags={"device": executor.device_label(self), "executor": executor.name,
                           "grid_path": self.spec.path, "budget": self.opt.budget}, verbose=self.opt.verbose,
                     warn=tqdm.write) as tracker:
            self.tracker = tracker
            bar = tqdm(executor.run(self, claimed_cells()), total=len(plan.todo), desc=f"grid {self.spec.name}",
                       unit="cell", disable=not self.opt.progress or None)
            try:
                for i, (cell, record, sample) in enumerate(bar, 1):
                    bar.set_postfix_str(cell.key)
                    if record["status"] != "ok" and record["error"].startswith("DiskError: "):
                        raise DiskError(record["error"][len("DiskError: "):])  # not the cell's fault: stop
                    params = self._tracking_params(cell, record)
                    if tracker.active:
                        # Write-ahead: the payload is queued before the record exists, so a kill at
                        # any point leaves either no record or a record whose payload `bench track` has.
                        outbox.add(record, params)
                    self.store.put(record)
                    summary.ran += 1
                    if tracker.mirror(record, params, sample):
                        outbox.remove(cell.cell_id)
                    elif tracker.active and sample is not None:
                        outbox.save_sample(cell.cell_id, sample)
                    claims.pop(cell.cell_id).release()  # after the mirror: a drain elsewhere leaves it alone
                    status = (f"clean {100 * record['clean_acc']:.1f}%  robust {100 * record['robust_acc']:.1f}%"
                              if record["status"] == "ok" else f"FAILED: {record['error']}")
                    tqdm.write(f"[{i}/{len(plan.todo)}] {cell.key}: {status} ({record['seconds']:.1f}s)")
                    if record["status"] != "ok":
                        summary.failed += 1
                        summary.failures.append(f"{cell.key}: {record['error']}")
            finally:
                bar.close()
                for claim in claims.values():
                    claim.release()
            if tracker.active and tracker.degraded is None and len(outbox):
                # Payloads left by an earlier outage or kill: the store works now, so catch up.
                replayed = drain(outbox, tracker)[0]
                if replayed:
                    tqdm.write(f"replayed {replayed} queued cells from {outbox.path} into MLflow")
            summary.queued = len(outbox) if tracker.active else 0
        self.store.set_flags(cell_flags)
        return summary

    def sample(self, cell: Cell, record: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Eight clean and adversarial images for MLflow (None for a failed cell)."""
        adv = self._adv.get(self._adv_key(cell)) if record["status"] == "ok" else None
        return (self.test.x[:8].cpu(), adv[0][:8].cpu()) if (adv is not None and self.opt.log_samples) else None

    def _tracking_params(self, cell: Cell, record: dict[str, Any]) -> dict[str, Any]:
        return {"dataset": cell.dataset, "arch": cell.arch, "train_defense": cell.train_defense,
                "runtime_defense": cell.runtime_defense, "attack": cell.attack, "threat": cell.threat,
                "eps": cell.eps, "limit": cell.limit, "seed": cell.seed, **{
                    f"attack.{k}": v for k, v in record.get("params", {}).get("attack", {}).items()}}

    def cell_fields(self, cell: Cell) -> dict[str, Any]:
        return {"key": cell.key, "cell_id": cell.cell_id, "config_hash": cell.cell_id, "grid": cell.grid,
                "dataset": cell.dataset, "arch": cell.arch, "train_defense": cell.train_defense,
                "runtime_defense": cell.runtime_defense, "attack": cell.attack_label, "attack_name": cell.attack,
                "threat": cell.threat, "eps": cell.eps, "seed": cell.seed, "device": str(self.device),
                "code_version": code_version()}

    @staticmethod
    def failure(exc: BaseException) -> dict[str, Any]:
        """The status / error fields of a cell that raised ``exc``."""
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        kind = "audit" if isinstance(exc, AuditError) else type(exc).__name__
        rec: dict[str, Any] = {"status": "failed", "error": f"{kind}: {msg}"[:500]}
        if not isinstance(exc, BenchError):
            rec["traceback"] = "".join(traceback.format_exception(exc, limit=8))[-2000:]
        return rec

    def run_cell(self, cell: Cell) -> dict[str, Any]:
        memory.reset()
        start = time.perf_counter()
        base = self.cell_fields(cell)
        base["num_threads"] = fix_threads()  # same float reductions under every executor
        torch.manual_seed(cell.seed)  # per cell: a resumed grid or a Ray worker draws what a full local run does
        try:
            rec = self._evaluate(cell)
            rec.update(self._diagnostics(cell))
            rec["status"], rec["error"] = "ok", ""
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # fault isolation: one broken cell must not stop the grid
            rec = self.failure(exc)
            if isinstance(exc, torch.cuda.OutOfMemoryError) and torch.cuda.is_available():
                torch.cuda.empty_cache()
        seconds = time.perf_counter() - start
        rec.update(base)
        rec["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        rec["seconds"] = round(seconds, 3)
        rec.update(memory.peak())
        rec.setdefault("n", 0)
        rec["examples_per_second"] = round(rec["n"] / seconds, 3) if seconds > 0 else 0.0
        return rec

    def _diagnostics(self, cell: Cell) -> dict[str, Any]:
        """Cheap reliability signals (see bench.reliability): zero input gradients of the attacked
        model, and for adaptive cells whether the defense is random and how many EOT draws the
        attack takes. Non-finite logits fail the cell."""
        model, model_key = self.model(cell.arch, cell.train_defense, cell.train_params, cell.seed)
        out: dict[str, Any] = {}
        target: Any = model
        if cell.threat == "adaptive":
            from attacks.eot import EOT

            defense = self.runtime(cell, model, model_key)
            randomized = bool(getattr(defense, "randomized", False))
            target = defense.attack_model()
            eot = self.attack(cell)[0].n if cell.attack == "eot" else (  # the attack's own default, not a copy
                target.n if isinstance(target, EOT) else 0)
            out.update(randomized=randomized, eot_samples=eot)
            if randomized or getattr(defense, "stateful", False):
                return out  # gradients of a random or stateful pipeline are neither cheap nor stable
        elif cell.threat == "transfer":
            return out
        if cell.threat == "adaptive":
            out["zero_grad_frac"] = round(zero_grad_fraction(target, self.test.x.to(self.device), self.test.y), 6)
        else:
            if model_key not in self._zero_grad:
                self._zero_grad[model_key] = round(zero_grad_fraction(model, self.test.x.to(self.device),
                                                                      self.test.y), 6)
            out["zero_grad_frac"] = self._zero_grad[model_key]
        return out

    # -- artifacts -------------------------------------------------------------------------------
    def train_set(self) -> data.Dataset:
        """The training split (or the grid's stand-in: ``train_split``, from ``train_offset``)."""
        if self._train_set is None:
            spec = self.spec
            full = data.load(spec.dataset, spec.train_split, self.opt.data_dir, None, self.opt.download,
                             self.opt.synthetic)
            self._train_set = full.subset(spec.train_limit, offset=spec.train_offset)
            if not len(self._train_set):
                raise BenchError(f"{spec.name}: train_offset {spec.train_offset} leaves no {spec.train_split} "
                                 f"images (the split has {len(full)})")
        return self._train_set

    def _model_key(self, arch: str, defense: str, given: dict[str, Any], seed: int) -> str:
        params = resolve_params(defenses.DEFENSES.get(defense), self.family, given, seed=seed)
        stand_in = {} if (self.spec.train_split, self.spec.train_offset) == ("train", 0) else {
            "train_split": self.spec.train_split, "train_offset": self.spec.train_offset}
        return config_hash({"dataset": self.spec.dataset, "train_limit": self.spec.train_limit, "arch": arch,
                            "defense": defense, "params": params, "version": __version__, **stand_in})

    def model(self, arch: str, defense: str, given: dict[str, Any], seed: int) -> tuple[torch.nn.Module, str]:
        """A trained model for (arch, train-time defense, hyperparameters, seed), cached on disk;
        ``robustbench:<Name>`` loads a RobustBench zoo model and a ``source`` entry a user's model
        (bench.sources) instead."""
        if sources.is_provided(given):
            key = config_hash({"source": given})
            if key not in self._models:
                if given["source"] == "object":
                    if defense not in self.opt.provided_models:
                        raise BenchError(f"[train.{defense}] source = \"object\" needs the model from Python "
                                         "(bench.evaluate)")
                    model = self.opt.provided_models[defense]
                else:
                    model = user_model.load_model(given, self.spec.base_dir, self.test.num_classes,
                                                  self.test.x.shape[1])
                self._models[key] = (self._frozen(model), key)
            return self._models[key]
        if is_zoo_name(defense):
            key = config_hash({"zoo": defense, "params": given})
            if key not in self._models:
                zoo = load_robustbench(defense, self.spec.dataset, given.get("threat", "Linf"),
                                       Path(self.opt.cache_dir) / "robustbench")
                self._models[key] = (self._frozen(zoo), key)
            return self._models[key]
        factory = defenses.DEFENSES.get(defense)
        params = resolve_params(factory, self.family, given, seed=seed)
        key = self._model_key(arch, defense, given, seed)
        if key in self._models:
            return self._models[key]
        if key in self._failed_artifacts:
            raise BenchError(self._failed_artifacts[key])
        path = Path(self.opt.cache_dir) / "models" / f"{key}.pt"
        nc, in_ch = self.test.num_classes, self.test.x.shape[1]
        with cache_lock(path):  # concurrent Ray workers train a model once
            ckpt = torch_load_or_none(path)
            if ckpt is not None:
                model = factory(**params).build(models.create(arch, nc, in_ch))
                model.load_state_dict(ckpt["state_dict"])
            else:
                try:
                    model = self._train(arch, defense, factory, params, key, nc, in_ch)
                except BenchError as exc:
                    self._failed_artifacts[key] = str(exc)
                    raise
                models.save(model, path, arch, defense=defense, params=params)
        self._models[key] = (self._frozen(model), key)
        return self._models[key]

    def _frozen(self, model: torch.nn.Module) -> torch.nn.Module:
        """On the run's device, in eval mode, without parameter gradients (attacks need input ones only)."""
        model = model.to(self.device).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    def _train(self, arch: str, defense: str, factory: Any, params: dict[str, Any], key: str,
               nc: int, in_ch: int) -> torch.nn.Module:
        torch.manual_seed(int(params.get("seed", 0)))
        model = models.create(arch, nc, in_ch)
        history: list[dict[str, float]] = []
        tqdm.write(f"training {arch} with {defense} {params}")
        resume_dir = Path(self.opt.cache_dir) / "training" / key
        trained = factory(**params).train(model, self.train_set(), device=self.device,
                                          callback=lambda e, m: history.append({"epoch": e, **m}),
                                          resume_dir=resume_dir)
        if self.tracker is not None:
            self.tracker.log_training(f"{defense} {arch}", {"arch": arch, "defense": defense, **params}, history)
        import shutil

        shutil.rmtree(resume_dir, ignore_errors=True)
        return trained

    def runtime(self, cell: Cell, model: torch.nn.Module, model_key: str) -> Any:
        factory = defenses.DEFENSES.get(cell.runtime_defense)
        params = resolve_params(factory, self.family, cell.runtime_params, seed=cell.seed,
                                cache_dir=str(self.opt.cache_dir))
        key = (model_key, cell.runtime_defense + config_hash(params))
        if key not in self._runtime:
            defense = factory(**params)
            defense.prepare(model, self.train_set() if getattr(defense, "needs_train_set", False) else None)
            defense.predict = _finite_logits(defense.predict, cell.runtime_defense)
            self._runtime[key] = defense
        return self._runtime[key]

    def attack(self, cell: Cell) -> Any:
        factory = attacks.ATTACKS.get(cell.attack)
        params = resolve_params(factory, self.family, cell.attack_params, seed=cell.seed)
        if cell.eps is not None:
            params["eps"] = cell.eps
        return factory(**params), params

    def _adv_key(self, cell: Cell) -> str:
        return config_hash({"cell": cell.cell_id}) if cell.threat == "adaptive" else config_hash({
            "train": [cell.train_defense, cell.train_params], "attack": cell.attack, "params": cell.attack_params,
            "eps": cell.eps, "threat": cell.threat, "surrogate": cell.surrogate, "limit": cell.limit,
            "seed": cell.seed, "dataset": cell.dataset, "arch": cell.arch, "version": __version__,
            # the trained models differ with their training images, so their adversarial examples do too
            **({} if cell.train_limit is None else {"train_limit": cell.train_limit}),
            **({} if (cell.train_split, cell.train_offset) == ("train", 0) else
               {"train_split": cell.train_split, "train_offset": cell.train_offset})})

    # -- one cell --------------------------------------------------------------------------------
    def predict(self, defense: Any, x: torch.Tensor, seed: int) -> tuple[torch.Tensor, list[float] | None]:
        """Predicted labels; stateful defenses see a fresh stream in a fixed, seeded order.

        Every pass starts from the defense's reset state, so a random defense's draws (RIDE, TVM with
        dropping) do not depend on which cells ran before: a resumed grid reproduces a full run."""
        x = x.to(self.device)
        defense.reset()
        if not getattr(defense, "stateful", False):
            return defense.predict(x).argmax(1).cpu(), None
        order = stream_order(len(x), seed)
        pred = torch.empty(len(x), dtype=torch.long)
        pred[order] = defense.predict(x[order]).argmax(1).cpu()
        return pred, list(getattr(defense, "last_delays", []) or [])

    def _evaluate(self, cell: Cell) -> dict[str, Any]:
        model, model_key = self.model(cell.arch, cell.train_defense, cell.train_params, cell.seed)
        defense = self.runtime(cell, model, model_key)
        x, y = self.test.x, self.test.y
        ck = (model_key, cell.runtime_defense + config_hash(cell.runtime_params))
        if ck not in self._clean:
            self._clean[ck] = self.predict(defense, x, cell.seed)[0]
        clean_pred = self._clean[ck]
        attack, attack_params = self.attack(cell)
        adv_key = self._adv_key(cell)
        if adv_key in self._adv:
            x_adv, norm = self._adv[adv_key]
        else:
            x_adv = self._craft(cell, attack, model, defense, x, y, adv_key)
            norm = attack.norm
        eps = None if attack.minimal_norm else attack.eps
        report = audit.audit(x.to(x_adv.device), x_adv, norm, eps)
        if adv_key not in self._adv:
            self._adv[adv_key] = (x_adv.cpu(), norm)
            if cell.threat != "adaptive":  # audited before it is cached, so the cache holds valid ones only
                atomic_torch_save(x_adv.cpu(), Path(self.opt.cache_dir) / "adv" / f"{adv_key}.pt")
        # One pass: a stream attack that already ran the scored stream hands over its predictions.
        online = attack.online_result(len(y), cell.seed) if hasattr(attack, "online_result") else None
        adv_pred, delays = online if online is not None else self.predict(defense, x_adv, cell.seed)
        clean_ok, robust_ok = clean_pred == y, adv_pred == y
        n = len(y)
        # Stream attacks with attack_rate < 1 interleave clean points: score the attack points only.
        attacked = getattr(attack, "last_attacked", None)
        mixed = attacked is not None and not bool(attacked.all())
        stream_ok = robust_ok
        if mixed:
            clean_ok, robust_ok = clean_ok[attacked], robust_ok[attacked]
        flipped = (clean_ok & ~robust_ok).sum().item()
        rec: dict[str, Any] = {
            "n": n, "norm": norm,
            "clean_acc": round((clean_pred == y).float().mean().item(), 6),
            "robust_acc": round(robust_ok.float().mean().item(), 6),
            "attack_success_rate": round(flipped / max(int(clean_ok.sum()), 1), 6),
            "max_perturbation": round(report.max_perturbation, 6),
            "mean_l2": round(report.mean_l2, 6),
            "mean_rho2": round(report.mean_rho2, 6),
            "per_example": "".join("1" if v else "0" for v in robust_ok.tolist()),
            "clean_per_example": "".join("1" if v else "0" for v in clean_ok.tolist()),
            "params": {"attack": attack_params, "train": cell.train_params, "runtime": cell.runtime_params,
                       "surrogate": cell.surrogate},
        }
        rec.update(_interval_fields(rec))
        if eps is None and not mixed:
            rec.update(_minimal_norm_fields(x.to(x_adv.device), x_adv, norm, clean_ok & ~robust_ok))
        if attacked is not None:
            rec["n_attacked"] = int(attacked.sum())
        if mixed:  # per_example / clean_per_example above cover the attack points only
            rec["attacked"] = "".join("1" if v else "0" for v in attacked.tolist())
            rec["stream_acc"] = round(stream_ok.float().mean().item(), 6)
        if delays:
            rec["delay_per_point_s"] = round(sum(delays) / len(delays), 6)
        if self.spec.metrics:  # per-model metrics the grid asks for (Deep Defense's Table 2), computed once
            from bench.metrics import for_model

            rec.update(for_model(self.spec.metrics, model, model_key, x.to(self.device), y.to(self.device),
                                 self.family))
        return rec

    def _craft(self, cell: Cell, attack: Any, model: torch.nn.Module, defense: Any, x: torch.Tensor,
               y: torch.Tensor, adv_key: str) -> torch.Tensor:
        cached = None
        path = Path(self.opt.cache_dir) / "adv" / f"{adv_key}.pt"
        if cell.threat != "adaptive":
            cached = torch_load_or_none(path)
        if cached is not None:
            return cached.to(self.device)
        x, y = x.to(self.device), y.to(self.device)
        if cell.threat == "base":
            target_model = model
        elif cell.threat == "transfer":
            sur = cell.surrogate
            target_model, _ = self.model(sur.get("arch", cell.arch), sur.get("defense", "standard"),
                                         sur.get("params", {}), int(sur.get("seed", cell.seed + 1)))
        else:
            defense.reset()  # as in predict(): the attack's draws do not depend on earlier cells
            if getattr(attack, "needs_defense", False):
                attack.bind(defense)
            if hasattr(attack, "stream_seed"):  # stream-aware attacks replay the order predict() uses
                attack.stream_seed = cell.seed
            target_model = defense.attack_model()
        return attack(target_model, x, y).detach()
