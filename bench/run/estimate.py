"""``bench estimate``: what a grid will cost, from real steps timed on this machine.

It runs the grid's smoke version (bench.spec.smoke: same architecture, shapes, batch sizes and device,
budgets shrunk) with every piece of work timed, then scales each piece to the real budget:

- training a model: x (real training images / smoke images) x (real epochs / smoke epochs) x
  (1 + real attack steps) / (1 + smoke attack steps) for adversarial training (linear in steps);
- building a runtime defense (D'): x (real / smoke training images) x (real / smoke copies) x the
  D' attack's step ratio (a database of clean images only, DeepNN's: images alone);
- crafting adversarial examples: x (real / smoke points) x the attack's work ratio, the product of
  its budgets (steps, restarts, binary-search steps, rounds, EOT draws, AutoAttack iterations; a
  wrapper's (bpda / eot) unset budgets are its inner attack's defaults). Where the runtime defense runs
  inside the attack, its own work counts too: a purifier's transform runs at every step of an
  adaptive attack (``attack_model``) or a wrapper, so x the defense's work ratio (RIDE's work, as
  below; median / TVM: 1, nothing of theirs is shrunk); a stream attack (pgd-skip, FPA / GMSA)
  runs the stateful defense's stream besides its own steps, so the larger of the two ratios (GMSA:
  the defense's x (1 + rounds), one stream per round and one more);
- predicting: x (real / smoke points) x the defense's work ratio (RMC: its epoch cap x the cost of
  one adaptation epoch over K images at the real batch size / over K_smoke at the smoke's, each
  step timed on this device with a copy of the model: the batch count alone predicted RMC on
  CIFAR-10 ResNet-32 at K = 64 six times too low on CPU, the image count 4x too high on digits;
  a defense that declares ``work_units(params)``, its own cost
  model: RIDE's checkpoints x (iterations + est_samples / 3) + 1, since a 2-iteration smoke
  checkpoint is mostly fixed work; a K-NN search: 1, as fast for any K, and the faiss search over
  a larger D' is not scaled). RMC's early stop is not
  modelled, so its figures are upper bounds: the cap, not the early stop, is what binds when the
  validation loss keeps falling.

It prints each timed piece with its factor, the prediction per cell and the total, for one device
and for N workers (total / N, but never below the longest single piece). Work shared between cells
(a trained model, D', one set of adversarial examples for every runtime defense) is counted once.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch

from bench.core.cache import config_hash
from bench.core.contracts import EOT_SAMPLES
from bench.core.errors import BenchError
from bench.run.artifacts import ArtifactStore
from bench.run.evaluation import Evaluator
from bench.run.runner import Runner, RunOptions
from bench.spec.grid import Cell, GridSpec
from bench.spec.smoke import ATTACK_CAPS, RUNTIME_CAPS, method_defaults, smoke_spec


@dataclass
class Piece:
    kind: str  # train / prepare / craft / predict
    label: str
    measured_s: float
    factor: float
    how: str
    cells: set[int] = field(default_factory=set)

    @property
    def predicted_s(self) -> float:
        return self.measured_s * self.factor


def _value(params: dict[str, Any], defaults: dict[str, Any], name: str, unbounded: float) -> float:
    v = params.get(name, defaults.get(name))
    if isinstance(v, bool):
        return 1.0
    return float(unbounded if v is None else v)


#: Budgets that are early-stop settings, not work (the cap they guard is).
NOT_WORK = ("patience",)
#: What an unset (None) budget means in the libraries (AutoAttack: 100 iterations, 5,000 queries;
#: JSMA: gamma x features / 2 pixel pairs, set per grid in ``estimate``).
UNBOUNDED = {"n_iter": 100, "n_queries": 5000}


def work_ratio(full: dict[str, Any], smoke: dict[str, Any], defaults: dict[str, Any], caps: dict[str, int],
               skip: tuple[str, ...] = (), factory: Any = None,
               step_cost: Callable[[int], float] | None = None) -> tuple[float, str]:
    """Product over budget names of full / smoke value, and a description of the factors. A method's
    ``work_params`` (if it declares them) names the budgets its cost grows with; others are ignored.
    ``step_cost(b)``: the measured seconds of one training step of the model on ``b`` images; with it,
    K's cost (RMC adapting on its K neighbours) is an epoch's steps at their real batch sizes, timed,
    instead of the batch count (a step costs neither a fixed amount nor its images: measured, the
    batch count predicted RMC 6x too low on CIFAR-10's ResNet-32, the image count the default grid 4x
    too high)."""
    ratio, parts = 1.0, []
    only = getattr(factory, "work_params", None)
    for name in caps:
        if name in skip or name in NOT_WORK or (only is not None and name not in only):
            continue
        if name not in full and name not in defaults and name not in smoke:
            continue
        f = _value(full, defaults, name, UNBOUNDED.get(name, caps[name]))
        s = _value(smoke, defaults, name, UNBOUNDED.get(name, caps[name]))
        if name == "k":  # K costs adaptation batches where the method trains on its neighbours (RMC)
            if "batch_size" not in defaults:
                continue  # a search: about as fast for any K
            bs = _value(full, defaults, "batch_size", 128)
            if step_cost is not None:
                cf = _epoch_cost(int(f), int(bs), step_cost)
                cs = _epoch_cost(int(s), int(_value(smoke, defaults, "batch_size", 128)), step_cost)
                if cf != cs and cs > 0:
                    ratio *= cf / cs
                    parts.append(f"k {f:g}/{s:g}: an epoch's steps timed {1e3 * cf:.3g}/{1e3 * cs:.3g} ms")
                continue
            f, s = math.ceil(f / bs), math.ceil(s / bs)
        if f != s and s > 0:
            ratio *= f / s
            parts.append(f"{name} {f:g}/{s:g}")
    return ratio, " x ".join(parts)


def _epoch_cost(k: int, batch: int, step_cost: Callable[[int], float]) -> float:
    """Seconds of one pass over k images in batches of ``batch``."""
    full, rest = divmod(k, max(batch, 1))
    return full * step_cost(batch) + (step_cost(rest) if rest else 0.0)


def step_timer(model: torch.nn.Module, shape: tuple[int, ...], num_classes: int,
               device: torch.device) -> Callable[[int], float]:
    """``b -> seconds`` of one Adam step of a copy of ``model`` on b random images (best of 3 after a
    warm-up, memoised): what an RMC adaptation step costs at batch b on this device."""
    import copy

    import torch.nn.functional as F

    from bench.core.timing import best_time

    net = copy.deepcopy(model).to(device).train()
    for p in net.parameters():
        p.requires_grad_(True)
    opt = torch.optim.Adam(net.parameters(), lr=1e-6)
    memo: dict[int, float] = {}

    def cost(b: int) -> float:
        if b not in memo:
            gen = torch.Generator().manual_seed(b)
            x = torch.rand((b, *shape), generator=gen).to(device)
            y = torch.randint(num_classes, (b,), generator=gen).to(device)

            def step() -> None:
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(net(x), y).backward()
                opt.step()

            memo[b] = best_time(step, device)
        return memo[b]

    return cost


def real_attack_budget(factory: Any, params: dict[str, Any], runtime_cls: Any, runtime_params: dict[str, Any],
                       family: str, features: int) -> dict[str, Any]:
    """The attack's params with budgets that an unset value leaves to the cell made explicit: JSMA's
    pixel pairs (gamma x features / 2) and EOT's draws (the bound purifier's ``eot_samples``)."""
    out, dflt = dict(params), method_defaults(factory, family)
    if "max_iters" in dflt and out.get("max_iters") is None:  # JSMA
        out["max_iters"] = max(int(features * _value(out, dflt, "gamma", 0.1) / 2), 1)
    if hasattr(factory, "draws") and out.get("n") is None and runtime_cls is not None:  # eot
        declared = method_defaults(runtime_cls, family).get("eot_samples", EOT_SAMPLES)
        out["n"] = runtime_params.get("eot_samples", declared)
    return out


def runtime_ratio(runtime_cls: Any, full: dict[str, Any], smoke: dict[str, Any], family: str,
                  step_cost: Callable[[int], float] | None = None) -> tuple[float, str]:
    """Real / smoke work of a runtime defense per point, and how: its ``work_units(params)`` where it
    declares one (a cost model over its resolved params, e.g. RIDE's fixed work per checkpoint), else
    ``work_ratio`` over the capped budgets (copies excluded: D' size costs in building it)."""
    dflt = method_defaults(runtime_cls, family)
    units = getattr(runtime_cls, "work_units", None)
    if units is None:
        return work_ratio(full, smoke, dflt, RUNTIME_CAPS, skip=("copies",), step_cost=step_cost)
    f, s = float(units({**dflt, **full})), float(units({**dflt, **smoke}))
    if f == s or s <= 0:
        return 1.0, ""
    return f / s, f"{getattr(runtime_cls, 'work_units_doc', 'work')} {f:.4g}/{s:.4g}"


def defense_runs_inside(factory: Any, runtime_cls: Any) -> bool:
    """Whether an adaptive attack runs the runtime defense's own work (its transform) at every step:
    a wrapper (bpda / eot) or a defense whose ``attack_model`` is more than the bare model (purifiers)."""
    from attacks.bpda import WrapperAttack
    from bench.core.contracts import RuntimeDefense

    if runtime_cls is None:
        return False
    if isinstance(factory, type) and issubclass(factory, WrapperAttack):
        return True
    return getattr(runtime_cls, "attack_model", None) is not RuntimeDefense.attack_model


def craft_ratio(factory: Any, full_attack: dict[str, Any], smoke_attack: dict[str, Any], runtime_cls: Any,
                full_runtime: dict[str, Any], smoke_runtime: dict[str, Any], threat: str,
                family: str, step_cost: Callable[[int], float] | None = None) -> tuple[float, str]:
    """Real / smoke work of crafting one cell's adversarial examples per point, and how (see the module
    docstring): the attack's budgets, times the runtime defense's where it runs inside the attack."""
    from attacks.bpda import wrapped_attack
    from attacks.pgd_skip import StreamAttack

    dflt, only = method_defaults(factory, family), factory
    inner = wrapped_attack(factory, full_attack)
    if inner is not None:  # a wrapper passes its budgets on: unset ones are the inner attack's defaults
        dflt = {**method_defaults(inner, family), **dflt}
        if getattr(inner, "work_params", None) is not None:
            only = SimpleNamespace(work_params=(*inner.work_params, "n"))
    r, h = work_ratio(full_attack, smoke_attack, dflt, ATTACK_CAPS, factory=only)
    if threat != "adaptive" or runtime_cls is None:
        return r, h
    name = getattr(runtime_cls, "registry_name", runtime_cls.__name__)
    r2, h2 = runtime_ratio(runtime_cls, full_runtime, smoke_runtime, family, step_cost)
    if getattr(runtime_cls, "stateful", False):
        if not (isinstance(factory, type) and issubclass(factory, StreamAttack)):
            return r, h  # e.g. pgd-nn: searches D', never runs the defense's adaptation
        if "rounds" in dflt or "rounds" in full_attack:  # FPA / GMSA: a stream per round and one more
            rf = 1 + _value(full_attack, dflt, "rounds", 1)
            rs = 1 + _value(smoke_attack, dflt, "rounds", 1)
            if rf != rs:
                r2, h2 = r2 * rf / rs, f"{h2} x (1+rounds) {rf:g}/{rs:g}" if h2 else f"(1+rounds) {rf:g}/{rs:g}"
        return max(r, r2), f"max({h or '1'}; {name} stream {h2 or '1'})"
    if defense_runs_inside(factory, runtime_cls) and r2 != 1:
        return r * r2, f"{h or '1'} x {name} at every step: {h2}"
    return r, h


def prepare_ratio(runtime_cls: Any, full_runtime: dict[str, Any], smoke_runtime: dict[str, Any],
                  family: str, features: int = 0) -> tuple[float, str]:
    """Real / smoke work of building a database defense per training image (copies x the D' attack's
    1 + steps; a D' made with other attacks than PGD, e.g. per-attack D', copies x that attack's own
    budgets, the costliest of a mix), and how; 1 for a database of clean images only (DeepNN's D)."""
    if not getattr(runtime_cls, "uses_adversarial_database", True):
        return 1.0, ""
    dflt = method_defaults(runtime_cls, family)
    r, h = work_ratio(full_runtime, smoke_runtime, dflt, {"copies": 1})
    names = full_runtime.get("db_attacks", dflt.get("db_attacks")) or ["pgd"]
    if isinstance(names, (list, tuple)) and any(n != "pgd" for n in names):
        import attacks
        from defenses.database import attack_params_for

        db_f = full_runtime.get("db_params", dflt.get("db_params")) or {}
        db_s = smoke_runtime.get("db_params", dflt.get("db_params")) or {}
        best = (1.0, "")
        for n in names:
            fac = attacks.ATTACKS.get_or_none(n)
            if fac is None:
                continue
            full_p = real_attack_budget(fac, attack_params_for(n, db_f), None, {}, family, features)
            smoke_p = real_attack_budget(fac, attack_params_for(n, db_s), None, {}, family, features)
            rr, hh = work_ratio(full_p, smoke_p, method_defaults(fac, family), ATTACK_CAPS, factory=fac)
            if rr >= best[0]:
                best = (rr, f"D' {n} {hh}" if hh else "")
        return r * best[0], " x ".join(part for part in (h, best[1]) if part)
    db_f = dict(dflt.get("db_params") or {}, **(full_runtime.get("db_params") or {}))
    db_s = smoke_runtime.get("db_params") or {}
    s_f, s_s = 1 + _value(db_f, {}, "steps", 10), 1 + _value(db_s, {}, "steps", 10)
    return r * s_f / s_s, (f"{h} x " if h else "") + f"(1+steps) {s_f:g}/{s_s:g}"


class _Timer:
    """Seconds per piece of work, and which pieces each cell used."""

    def __init__(self) -> None:
        self.timed: dict[tuple[str, str], float] = {}
        self.cell_pieces: dict[int, list[tuple[str, str]]] = {}
        self.cell_index = -1
        self.cell_id = ""

    def note(self, kind: str, key: str, seconds: float) -> None:
        self.timed[(kind, key)] = self.timed.get((kind, key), 0.0) + seconds
        self.cell_pieces.setdefault(self.cell_index, []).append((kind, key))


class TimingArtifacts(ArtifactStore):
    """Times training and runtime-defense preparation."""

    timer: _Timer

    def train(self, arch: str, defense: str, factory: Any, params: dict[str, Any], key: str, nc: int,
              in_ch: int) -> Any:
        start = time.perf_counter()
        try:
            return super().train(arch, defense, factory, params, key, nc, in_ch)
        finally:
            self.timer.note("train", f"{defense}|{arch}|{key}", time.perf_counter() - start)

    def runtime(self, cell: Cell, model: Any, model_key: str) -> Any:
        before = len(self._runtime)
        start = time.perf_counter()
        defense = super().runtime(cell, model, model_key)
        if len(self._runtime) > before:
            # one piece per D' variant of a per-attack defense (its runtime params name the D')
            self.timer.note("prepare", f"{cell.runtime_defense}|{config_hash(cell.runtime_params)}|{model_key}",
                            time.perf_counter() - start)
        return defense


class TimingEvaluator(Evaluator):
    """Times crafting and prediction."""

    timer: _Timer

    def craft(self, cell: Cell, *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return super().craft(cell, *args)
        finally:
            self.timer.note("craft", self.artifacts.adv_key(cell), time.perf_counter() - start)

    def predict(self, defense: Any, x: Any, seed: int, y: Any = None) -> Any:
        start = time.perf_counter()
        try:
            return super().predict(defense, x, seed, y)
        finally:
            self.timer.note("predict", f"{self.timer.cell_id}|{id(x)}", time.perf_counter() - start)


class TimingRunner(Runner):
    """A Runner that times its pieces of work per cell (a smoke run, see the module docstring)."""

    artifact_store = TimingArtifacts
    evaluator = TimingEvaluator

    def __init__(self, spec: GridSpec, options: RunOptions) -> None:
        super().__init__(spec, options)
        self.opt.stream_batch = 1  # the factors scale one stream's timed work: no batched streams here
        self.timer = self.artifacts.timer = self.evaluation.timer = _Timer()

    def run_cell(self, cell: Cell) -> dict[str, Any]:
        self.timer.cell_index, self.timer.cell_id = self.cells.index(cell), cell.cell_id
        return super().run_cell(cell)


#: Test points and training images of the timed smoke run: more than the smoke's own caps (4 / 128), so
#: that per-cell overhead does not dominate what is scaled up; the factor-2 validation used these.
ESTIMATE_LIMIT, ESTIMATE_TRAIN_LIMIT = 16, 512


def estimate(spec: GridSpec, options: RunOptions, workers: int = 1) -> dict[str, Any]:
    """Time the smoke run of ``spec`` and scale each piece to the real budget (see module docstring)."""
    import attacks
    import defenses
    from bench.core import data

    small = smoke_spec(spec, limit=ESTIMATE_LIMIT, train_limit=ESTIMATE_TRAIN_LIMIT)
    runner = TimingRunner(small, options)
    full_cells = spec.cells(limit=options.limit, seed=options.seed)
    plan = runner.plan()
    runner.preflight(plan.todo)
    runner.setup()
    _warm_up(runner)
    wall = time.perf_counter()
    failed = [rec for rec in (runner.run_cell(cell) for cell in plan.todo) if rec.get("status") != "ok"]
    wall = time.perf_counter() - wall
    if failed:  # a failed smoke cell times almost nothing: its prediction would be silently far too low
        first = failed[0]
        raise BenchError(f"bench estimate: {len(failed)} of {len(plan.todo)} smoke cells of {spec.name} failed "
                         f"(first: {first.get('key')}: {str(first.get('error', ''))[:200]}); "
                         f"run `bench run --grid {spec.name} --smoke` to see why")
    family = data.family_of(spec.dataset)
    timers: dict[str, Callable[[int], float]] = {}

    def step_cost_of(cell: Cell) -> Callable[[int], float]:
        """Lazily: the adaptation-step timer of the cell's model (made only when K is scaled)."""
        key = json.dumps([cell.arch, cell.train_defense, cell.train_params, cell.seed], sort_keys=True, default=str)

        def cost(b: int) -> float:
            if key not in timers:
                model, _ = runner.artifacts.model(cell.arch, cell.train_defense, cell.train_params, cell.seed)
                timers[key] = step_timer(model, tuple(runner.test.x.shape[1:]), runner.test.num_classes,
                                         runner.device)
            return timers[key](b)
        return cost
    n_smoke = len(runner.test)
    n_full = max((c.limit or n_smoke for c in full_cells), default=n_smoke)
    train_smoke = runner.artifacts.loaded_train_size
    pieces: dict[tuple[str, str, str], Piece] = {}
    timed_cell = {}  # smoke cell_id -> the index that ran it: the caps can make two full cells one smoke cell
    for i, cell in enumerate(runner.cells):
        if i in runner.timer.cell_pieces:
            timed_cell.setdefault(cell.cell_id, i)
    for i, cell in enumerate(runner.cells):
        full = full_cells[i]
        for kind, key in runner.timer.cell_pieces.get(timed_cell.get(cell.cell_id, i), []):
            # The smoke caps can make two full-budget pieces one (eot n=4 and n=8 both shrink to n=2):
            # the work is timed once but predicted once per distinct full budget.
            piece_id = (kind, key, _full_budget(kind, full))
            if piece_id in pieces:
                pieces[piece_id].cells.add(i)
                continue
            measured = runner.timer.timed[(kind, key)]
            if kind == "train":
                name = key.split("|")[0]
                factory = defenses.DEFENSES.get(name)
                dflt = method_defaults(factory, family)
                full_p = spec.train.get(name, {}) if name in spec.train else {}
                ep_f = _value(full_p, dflt, "epochs", 1) + _value(full_p, dflt, "pretrain_epochs", 0)
                ep_s = _value(small.train.get(name, {}), dflt, "epochs", 1) + _value(
                    small.train.get(name, {}), dflt, "pretrain_epochs", 0)
                n_train = spec.train_limit or _train_size(spec, options)
                uses_steps = "steps" in getattr(factory, "work_params", ("steps",))
                steps_f = 1 + (_value(full_p, dflt, "steps", 0) if uses_steps else 0)
                steps_s = 1 + (_value(small.train.get(name, {}), dflt, "steps", 0) if uses_steps else 0)
                # epochs = 0 (an untrained wiring-check model): no epochs to scale, only the setup timed
                ep_ratio = ep_f / ep_s if ep_s else (1.0 if ep_f == 0 else float(ep_f))
                factor = (n_train / max(train_smoke, 1)) * ep_ratio * (steps_f / steps_s)
                how = f"images {n_train}/{train_smoke} x epochs {ep_f:g}/{ep_s:g} x (1+steps) {steps_f:g}/{steps_s:g}"
                label = f"train {name}"
            elif kind == "prepare":
                factory = defenses.DEFENSES.get(cell.runtime_defense)
                dflt = method_defaults(factory, family)
                if getattr(factory, "needs_train_set", False):
                    n_train = spec.train_limit or _train_size(spec, options)
                    r, h = prepare_ratio(factory, full.runtime_params, cell.runtime_params, family,
                                         runner.test.x[0].numel())
                    factor = (n_train / max(train_smoke, 1)) * r
                    how = f"images {n_train}/{train_smoke}" + (f" x {h}" if h else "")
                else:
                    factor, how = 1.0, "fixed"
                label = f"prepare {cell.runtime_defense}" + (f" (D' {cell.dprime})" if cell.dprime else "")
            elif kind == "craft":
                factory = attacks.ATTACKS.get(cell.attack)
                runtime_cls = defenses.DEFENSES.get(cell.runtime_defense)
                full_params = real_attack_budget(factory, full.attack_params, runtime_cls, full.runtime_params,
                                                 family, runner.test.x[0].numel())
                r, h = craft_ratio(factory, full_params, cell.attack_params, runtime_cls, full.runtime_params,
                                   cell.runtime_params, cell.threat, family, step_cost_of(cell))
                factor, how = _per_point(full.limit or n_full, min(cell.limit or n_smoke, n_smoke), r, h)
                label = f"craft {cell.attack_label} ({cell.threat}) {cell.train_defense}" + (
                    f"/{cell.runtime_defense}" if cell.threat == "adaptive" else "")
            else:
                factory = defenses.DEFENSES.get(cell.runtime_defense)
                r, h = runtime_ratio(factory, full.runtime_params, cell.runtime_params, family, step_cost_of(cell))
                factor, how = _per_point(full.limit or n_full, min(cell.limit or n_smoke, n_smoke), r, h)
                label = f"predict {cell.train_defense}/{cell.runtime_defense}"
            pieces[piece_id] = Piece(kind, label, measured, factor, how, {i})
    total = sum(p.predicted_s for p in pieces.values())
    per_cell = {full_cells[i].key: 0.0 for i in range(len(full_cells))}
    for p in pieces.values():  # shared work is charged to the first cell that needs it
        per_cell[full_cells[min(p.cells)].key] += p.predicted_s
    longest = max((p.predicted_s for p in pieces.values()), default=0.0)
    return {"grid": spec.name, "device": str(runner.device), "smoke_wall_s": wall, "pieces": list(pieces.values()),
            "per_cell": per_cell, "total_s": total, "workers": workers,
            "total_workers_s": max(total / max(workers, 1), longest), "n": n_full, "n_smoke": n_smoke}


def _per_point(n_cell: int, n_small: int, ratio: float, how: str) -> tuple[float, str]:
    """Scale a per-point piece (crafting, predicting) from the smoke's points to the cell's."""
    return (n_cell / n_small) * ratio, f"points {n_cell}/{n_small}" + (f" x {how}" if how else "")


def _full_budget(kind: str, cell: Cell) -> str:
    """What distinguishes a piece's full-budget work beyond its smoke artifact key."""
    if kind == "craft":
        parts: Any = [cell.attack, cell.attack_params, cell.threat, cell.eps]
        if cell.threat == "adaptive":
            parts += [cell.runtime_defense, cell.runtime_params]
    elif kind in ("prepare", "predict"):
        parts = [cell.runtime_defense, cell.runtime_params]
    else:
        parts = []
    return json.dumps(parts, sort_keys=True, default=str)


def _warm_up(runner: Runner) -> None:
    """An optimizer and a few forward/backward passes of the grid's architecture first, so that one-off
    start-up costs (torch._dynamo's import, kernel selection, thread pools) are not charged to the
    first timed piece."""
    import torch

    from bench.core import models

    if runner.spec.arch not in models.ARCHS:
        return
    net = models.create(runner.spec.arch, runner.test.num_classes, runner.test.x.shape[1]).to(runner.device)
    x = runner.test.x[:128].to(runner.device)
    torch.optim.Adam(net.parameters())  # the first optimizer imports torch._dynamo: seconds, once per process
    for _ in range(3):
        net(x.requires_grad_(True)).sum().backward()
    torch.manual_seed(runner.cells[0].seed)


def _train_size(spec: GridSpec, options: RunOptions) -> int:
    """Training images the real run reads (the split's size, or the stand-in's)."""
    from bench.core import data

    try:
        full = data.load(spec.dataset, spec.train_split, options.data_dir, None, options.download)
        return max(len(full) - spec.train_offset, 0)
    except Exception:  # noqa: BLE001 - missing files: the smoke run used synthetic data; say the known size
        return {"cifar10": 50000, "mnist": 60000, "fashion-mnist": 60000, "digits": 1297}.get(spec.dataset, 1)


def human_seconds(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def format_report(rep: dict[str, Any]) -> str:
    lines = [f"estimate for grid {rep['grid']} on {rep['device']}: timed its smoke run ({rep['n_smoke']} points, "
             f"{rep['smoke_wall_s']:.1f} s) and scaled every piece to the real budget ({rep['n']} points)", "",
             "| piece | measured | factor (real / smoke) | predicted |", "| --- | --- | --- | --- |"]
    for p in sorted(rep["pieces"], key=lambda p: -p.predicted_s):
        lines.append(f"| {p.label} | {p.measured_s:.2f} s | {p.factor:,.1f} = {p.how or '1'} | "
                     f"{human_seconds(p.predicted_s)} |")
    lines += ["", "| cell | predicted (shared work charged to its first cell) |", "| --- | --- |"]
    lines += [f"| {k} | {human_seconds(v)} |" for k, v in rep["per_cell"].items()]
    lines += ["", "| work | predicted |", "| --- | --- |"]
    for kind in ("train", "prepare", "craft", "predict"):
        total = sum(p.predicted_s for p in rep["pieces"] if p.kind == kind)
        lines.append(f"| {kind} | {human_seconds(total)} |")
    rows: dict[str, list[float]] = {}
    for key, v in rep["per_cell"].items():
        rows.setdefault("/".join(key.split("/")[:2]), []).append(v)
    lines += ["", "| row (train-time / runtime) | cells | predicted |", "| --- | --- | --- |"]
    by_cost = sorted(rows.items(), key=lambda kv: -sum(kv[1]))
    lines += [f"| {r} | {len(v)} | {human_seconds(sum(v))} |" for r, v in by_cost]
    lines += ["", f"total: {human_seconds(rep['total_s'])} on one {rep['device']} device; "
                  f"{human_seconds(rep['total_workers_s'])} on {rep['workers']} workers "
                  "(total / workers, never below the longest piece)"]
    return "\n".join(lines)


def compare_report(rep: dict[str, Any], records: list[dict[str, Any]]) -> str:
    """The prediction beside a real run's measured cell times (its records' ``seconds``).

    A record's seconds include the work it shared (training its model, building D') when it was
    the first cell to need it, as the prediction charges it; a run that found models in its cache
    measured less than the estimate predicts. Cells without an ``ok`` record are left out of both
    totals. Records that carry ``cpu_seconds`` (the process's CPU time, which other load on the
    machine does not inflate) show it too, divided by their thread count."""
    ok = {r["key"]: r for r in records if r.get("status") == "ok" and "seconds" in r}
    lines = ["| cell | predicted | measured | measured CPU / threads | predicted / measured |",
             "| --- | --- | --- | --- | --- |"]
    pred_total = meas_total = cpu_total = 0.0
    compared = with_cpu = 0
    for key, pred in rep["per_cell"].items():
        if key not in ok:
            continue
        rec, compared = ok[key], compared + 1
        meas = float(rec["seconds"])
        pred_total, meas_total = pred_total + pred, meas_total + meas
        cpu = "-"
        if "cpu_seconds" in rec:
            c = float(rec["cpu_seconds"]) / max(int(rec.get("num_threads") or 1), 1)
            cpu, cpu_total, with_cpu = human_seconds(c), cpu_total + c, with_cpu + 1
        ratio = f"{pred / meas:.2f}" if meas > 0 else "-"
        lines.append(f"| {key} | {human_seconds(pred)} | {human_seconds(meas)} | {cpu} | {ratio} |")
    missing = len(rep["per_cell"]) - compared
    if meas_total <= 0:
        return "no measured cell of this grid in the records given: nothing to compare"
    lines += ["", f"compared {compared} cells ({missing} without a measured record): predicted "
                  f"{human_seconds(pred_total)}, measured {human_seconds(meas_total)} (sum of the records' "
                  f"cell seconds), ratio {pred_total / meas_total:.2f}"]
    if with_cpu:
        lines.append(f"CPU time / threads of the {with_cpu} cells that record it: {human_seconds(cpu_total)} "
                     "(wall time on an otherwise idle machine is about this or more)")
    return "\n".join(lines)
