"""One cell, start to record: craft (or reuse) adversarial examples, audit them against the threat
model, predict the clean and adversarial points (a stateful defense sees them as one seeded stream),
and score: accuracies, Wilson intervals, minimal-norm statistics, reliability signals."""

from __future__ import annotations

import os
import time
import traceback
from typing import Any

import torch

from bench.core import memory
from bench.core import stream_records as perpoint
from bench.core.approx import EOT
from bench.core.cache import config_hash
from bench.core.contracts import AttackResult, StatefulDefense
from bench.core.device import describe as describe_device
from bench.core.errors import AuditError, BenchError
from bench.core.stream import stream_order
from bench.core.version import code_version
from bench.run import audit, purifier_distances
from bench.run import indicators as failure_indicators
from bench.run.artifacts import ArtifactStore
from bench.run.diagnostics import zero_grad_fraction
from bench.run.stream_batch import StreamBatcher
from bench.spec.grid import Cell, GridSpec


def cell_threads() -> int:
    """Intra-op threads per cell: ``$BENCH_NUM_THREADS``, else 1 (what a Ray worker gets)."""
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
    """95% Wilson intervals (bench.core.stats) of the clean and robust accuracy, as [low, high]."""
    from bench.core.stats import interval_of, wilson_interval

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


def failure(exc: BaseException) -> dict[str, Any]:
    """The status / error fields of a cell that raised ``exc``."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    kind = "audit" if isinstance(exc, AuditError) else type(exc).__name__
    rec: dict[str, Any] = {"status": "failed", "error": f"{kind}: {msg}"[:500]}
    if not isinstance(exc, BenchError):
        rec["traceback"] = "".join(traceback.format_exception(exc, limit=8))[-2000:]
    return rec


def cell_fields(cell: Cell, device: Any) -> dict[str, Any]:
    """The fields that identify a cell's record (and where and with which code it ran)."""
    return {"key": cell.key, "cell_id": cell.cell_id, "config_hash": cell.cell_id, "grid": cell.grid,
            "dataset": cell.dataset, "arch": cell.arch, "train_defense": cell.train_defense,
            "runtime_defense": cell.runtime_defense, "attack": cell.attack_label, "attack_name": cell.attack,
            "threat": cell.threat, "eps": cell.eps, "seed": cell.seed, "device": str(device),
            "device_name": describe_device(device), "code_version": code_version(),
            **({"dprime": cell.dprime} if cell.dprime is not None else {})}


def crafts_full_budget(cell: Cell, defense: Any) -> bool:
    """Whether the cell's attack runs its whole budget and returns its final iterate
    (``Attack.full_budget``): its examples are judged on another model (transfer; the artifact store
    builds such attacks so, which keys their cache apart) or on another draw of a randomized defense."""
    return cell.threat == "transfer" or (cell.threat == "adaptive" and bool(getattr(defense, "randomized", False)))


class Evaluator:
    """Evaluates cells against the artifacts of one run; ``run_cell`` never raises for a cell's own
    fault (fault isolation: one broken cell must not stop the grid)."""

    def __init__(self, spec: GridSpec, artifacts: ArtifactStore) -> None:
        self.spec, self.artifacts = spec, artifacts
        self._clean: dict[tuple[str, str], torch.Tensor] = {}
        self._zero_grad: dict[str, float] = {}  # per base model
        #: per adversarial-examples key: the attack's result (its trace) and the indicators that depend
        #: on the attack alone, for later cells scoring the same examples
        self._traces: dict[str, AttackResult] = {}
        self._indicator_memo: dict[str, dict[str, Any]] = {}
        #: RMC streams of several cells run together (bench.run.stream_batch); off until the runner sizes it
        self.batcher = StreamBatcher()

    @property
    def device(self) -> torch.device:
        return self.artifacts.device

    def run_cell(self, cell: Cell) -> dict[str, Any]:
        memory.reset()
        start, cpu_start = time.perf_counter(), time.process_time()
        self.batcher.begin(cell)
        base = cell_fields(cell, self.device)
        base["num_threads"] = fix_threads()  # same float reductions under every executor
        torch.manual_seed(cell.seed)  # per cell: a resumed grid or a Ray worker draws what a full local run does
        try:
            rec = self.evaluate(cell)
            rec.update(self.diagnostics(cell))
            rec["status"], rec["error"] = "ok", ""
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # fault isolation: one broken cell must not stop the grid
            rec = failure(exc)
            if isinstance(exc, torch.cuda.OutOfMemoryError) and torch.cuda.is_available():
                torch.cuda.empty_cache()
        # a batched stream: this cell's own share, not its partners' crafting and streams
        seconds = time.perf_counter() - start - self.batcher.lent + self.batcher.borrowed
        rec.update(base)
        rec["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        rec["seconds"] = round(seconds, 3)
        # CPU time of the whole process (every thread): unlike `seconds`, not inflated by other load
        rec["cpu_seconds"] = round(time.process_time() - cpu_start, 3)
        rec.update(memory.peak())
        rec.setdefault("n", 0)
        rec["examples_per_second"] = round(rec["n"] / seconds, 3) if seconds > 0 else 0.0
        return rec

    def diagnostics(self, cell: Cell) -> dict[str, Any]:
        """Cheap reliability signals (see bench.report.flags): zero input gradients of the attacked
        model, and for adaptive cells whether the defense is random and how many EOT draws the
        attack takes. Non-finite logits fail the cell."""
        art = self.artifacts
        model, model_key = art.model(cell.arch, cell.train_defense, cell.train_params, cell.seed)
        out: dict[str, Any] = {}
        target: Any = model
        if cell.threat == "adaptive":
            defense = art.runtime(cell, model, model_key)
            randomized = bool(defense.randomized)
            target = defense.attack_model()
            # the draws the attack takes (eot: its n, else the purifier's declared eot_samples), else
            # those of the defense's own attack surface
            eot = art.attack(cell)[0].eot_draws(defense) or (target.n if isinstance(target, EOT) else 0)
            out.update(randomized=randomized, eot_samples=eot)
            if randomized or isinstance(defense, StatefulDefense):
                return out  # gradients of a random or stateful pipeline are neither cheap nor stable
        elif cell.threat == "transfer":
            return out
        if cell.threat == "adaptive":
            out["zero_grad_frac"] = round(zero_grad_fraction(target, art.test.x.to(self.device), art.test.y), 6)
        else:  # one backward pass per base model, not per cell (on ImageNet it costs a one-step attack)
            if model_key not in self._zero_grad:
                self._zero_grad[model_key] = round(zero_grad_fraction(model, art.test.x.to(self.device),
                                                                      art.test.y), 6)
            out["zero_grad_frac"] = self._zero_grad[model_key]
        return out

    def predict(self, defense: Any, x: torch.Tensor, seed: int,
                y: torch.Tensor | None = None) -> tuple[torch.Tensor, list[float] | None]:
        """Predicted labels; stateful defenses see a fresh stream in a fixed, seeded order.

        Every pass starts from the defense's reset state, so a random defense's draws (RIDE, TVM with
        dropping) do not depend on which cells ran before: a resumed grid reproduces a full run."""
        x = x.to(self.device)
        defense.reset()
        if not isinstance(defense, StatefulDefense):
            return defense.logits(x).argmax(1).cpu(), None
        order = stream_order(len(x), seed)
        pred = torch.empty(len(x), dtype=torch.long)
        if y is not None:  # hindsight-adv learns from seen points' labels (a no-op for the others)
            defense.reveal(y[order])
        pred[order] = defense.logits(x[order]).argmax(1).cpu()
        return pred, list(defense.last_delays)

    def evaluate(self, cell: Cell) -> dict[str, Any]:
        """The record fields of one cell (raises on the cell's faults; run_cell records them)."""
        art = self.artifacts
        model, model_key = art.model(cell.arch, cell.train_defense, cell.train_params, cell.seed)
        defense = art.runtime(cell, model, model_key)
        x, y = art.test.x[: cell.limit], art.test.y[: cell.limit]  # a runtime's own limit: a prefix
        ck = (model_key, cell.runtime_defense + config_hash(cell.runtime_params), len(y))
        if ck not in self._clean:
            parts = {"model": model_key, "runtime": ck[1], "n": len(y), "seed": cell.seed, "device": self.device.type}
            self._clean[ck] = art.clean_predictions(parts, x, lambda: self.predict(defense, x, cell.seed, y)[0])
        clean_pred = self._clean[ck]
        attack, attack_params = art.attack(cell)
        if crafts_full_budget(cell, defense):  # a transfer cell's attack comes so from the store (its cache key)
            attack = attack.full_budget()
        x_adv, norm, eps, report, result = self.adversarial(cell, attack, model, defense, x, y)
        figure7 = purifier_distances.wanted(self.spec.metrics, cell, defense, attack)
        purified: list[torch.Tensor] = []
        # One pass: a stream attack that already ran the scored stream hands over its predictions.
        online = result.stream_for(len(y), cell.seed) if result is not None else None
        batch = None
        if online is not None:
            adv_pred, delays, stats = online.pred.clone(), list(online.delays), online.stats
        else:
            batch = self.batcher.take(cell) or self.batcher.run(  # take: computed in an earlier cell's batch
                cell, defense, x_adv, y, lambda other: self.partner_adversarial(other, model, defense))
            if batch is not None:
                adv_pred, delays, stats = batch.pred, batch.delays, batch.stats
            else:
                with purifier_distances.recording(defense if figure7 else None) as purified:
                    adv_pred, delays = self.predict(defense, x_adv, cell.seed, y)
                stats = list(defense.last_stats) if isinstance(defense, StatefulDefense) else None
        attacked = result.attacked if result is not None else None
        rec = self.score(cell, clean_pred, adv_pred, delays, attacked, attack_params, x, x_adv, y, norm, eps,
                         report, model, model_key)
        if attack.keep_last:
            rec["attack_returns"] = "final iterate"  # Attack.full_budget, not the first adversarial one
        if isinstance(getattr(defense, "precision", None), str):  # RMC's adaptation precision
            rec["adapt_precision"] = defense.precision
        if getattr(defense, "min_delta", 0):  # RMC's relative improvement threshold, when set
            rec["adapt_min_delta"] = defense.min_delta
        if figure7:  # RIDE's Figure 7: g(x_adv) from the scored prediction above, no second purification
            rec.update(purifier_distances.fields(model, defense, x, x_adv, y, purified))
        if batch is not None:
            rec["stream_batch"] = batch.streams
        if isinstance(defense, StatefulDefense):  # per-point stream records (position, correct, delay, stats)
            stream_ok = adv_pred == y
            rec.update(perpoint.stream_record(stream_ok, cell.seed, delays, stats))
        elif attacked is None:  # a stream attack's or stateful defense's gradients are neither cheap nor stable
            rec.update(self.indicators(cell, attack, model, defense, x, y, x_adv, adv_pred, clean_pred, result))
        return rec

    def indicators(self, cell: Cell, attack: Any, model: torch.nn.Module, defense: Any, x: torch.Tensor,
                   y: torch.Tensor, x_adv: torch.Tensor, adv_pred: torch.Tensor, clean_pred: torch.Tensor,
                   result: AttackResult | None) -> dict[str, Any]:
        """Indicators of attack failure (bench.run.indicators; Pintor et al., NeurIPS 2022) of the cell;
        a fault in them is recorded, never fails the cell's number."""
        key = self.artifacts.adv_key(cell)
        if result is not None:
            self._traces[key] = result
        elif key not in self._traces and cell.threat != "adaptive":
            cached = self._cached_trace(key)
            if cached is not None:
                self._traces[key] = cached
        memo = self._indicator_memo.setdefault(key, {})
        torch.manual_seed(cell.seed)  # a random pipeline's draws do not depend on the cells before
        try:
            return failure_indicators.compute(
                attack, self.attack_target(cell, model, defense), x, y, x_adv, adv_pred, clean_pred == y,
                result=self._traces.get(key), transfer=cell.threat in ("transfer", "adaptive"), seed=cell.seed,
                memo=memo)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - a diagnostic must not cost the cell its number
            return {"indicators_error": f"{type(exc).__name__}: {str(exc).strip()[:300]}"}

    def attack_target(self, cell: Cell, model: torch.nn.Module, defense: Any) -> Any:
        """What the cell's attack runs on: the model (base), the surrogate (transfer), or the defense's
        attack surface (adaptive; bind the attack first)."""
        if cell.threat == "base":
            return model
        if cell.threat == "transfer":
            sur = cell.surrogate
            return self.artifacts.model(sur.get("arch", cell.arch), sur.get("defense", "standard"),
                                        sur.get("params", {}), int(sur.get("seed", cell.seed + 1)))[0]
        return defense.attack_model()

    def score(self, cell: Cell, clean_pred: torch.Tensor, adv_pred: torch.Tensor, delays: list[float] | None,
              attacked: torch.Tensor | None, attack_params: dict[str, Any], x: torch.Tensor, x_adv: torch.Tensor,
              y: torch.Tensor, norm: Any, eps: float | None, report: Any, model: torch.nn.Module,
              model_key: str) -> dict[str, Any]:
        clean_ok, robust_ok = clean_pred == y, adv_pred == y
        n = len(y)
        # Stream attacks with attack_rate < 1 interleave clean points: score the attack points only.
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
            from bench.run.model_metrics import for_model

            rec.update(for_model(self.spec.metrics, model, model_key, x.to(self.device), y.to(self.device),
                                 self.artifacts.family))
        return rec

    def adversarial(self, cell: Cell, attack: Any, model: torch.nn.Module, defense: Any, x: torch.Tensor,
                    y: torch.Tensor) -> tuple[torch.Tensor, Any, float | None, Any, AttackResult | None]:
        """The cell's audited adversarial examples (from memory, the cache, or crafted), their norm,
        the eps they were audited at (None for a minimal-norm attack), the audit report and the attack's
        result (None where the examples were not crafted now)."""
        art = self.artifacts
        adv_key = art.adv_key(cell)
        held = art.adv_in_memory(adv_key)
        result = None
        if held is not None:
            x_adv, norm = held
        else:
            x_adv, result = self.craft(cell, attack, model, defense, x, y, adv_key)
            norm = attack.norm
        eps = None if attack.minimal_norm else attack.eps
        report = audit.audit(x.to(x_adv.device), x_adv, norm, eps)
        if held is None:  # audited before it is kept, so the cache holds valid ones only
            if result is not None and cell.threat != "adaptive":  # the trace first: a reader of the examples finds it
                self._keep_trace(adv_key, result)
            art.keep_adv(adv_key, x_adv, norm, persist=cell.threat != "adaptive")
        return x_adv, norm, eps, report, result

    def _trace_path(self, adv_key: str) -> Any:
        from pathlib import Path

        return Path(self.artifacts.opt.cache_dir) / "adv" / f"{adv_key}.trace.pt"

    def _keep_trace(self, adv_key: str, result: AttackResult) -> None:
        """The attack's trace beside its cached examples, for the failure indicators of cells (in other
        workers, or a later run) that read the examples from the cache."""
        from bench.core.cache import atomic_torch_save

        # the target classes too when there is no trace (JSMA): without them a cell reading the cached
        # examples would judge a targeted attack's success as untargeted, unlike the cell that crafted them
        if result.loss_trace is not None or result.first_success is not None or result.target is not None:
            atomic_torch_save({"loss_trace": result.loss_trace, "first_success": result.first_success,
                               "target": result.target}, self._trace_path(adv_key))

    def _cached_trace(self, adv_key: str) -> AttackResult | None:
        from bench.core.cache import torch_load_or_none

        saved = torch_load_or_none(self._trace_path(adv_key))
        if not isinstance(saved, dict):
            return None
        return AttackResult(torch.empty(0), target=saved.get("target"), loss_trace=saved.get("loss_trace"),
                            first_success=saved.get("first_success"))

    def partner_adversarial(self, cell: Cell, model: torch.nn.Module, defense: Any) -> torch.Tensor:
        """A later cell's audited examples, crafted ahead of its turn for a batched stream (its model
        and defense are the current cell's: bench.run.stream_batch.batch_key)."""
        x, y = self.artifacts.test.x[: cell.limit], self.artifacts.test.y[: cell.limit]
        return self.adversarial(cell, self.artifacts.attack(cell)[0], model, defense, x, y)[0]

    def craft(self, cell: Cell, attack: Any, model: torch.nn.Module, defense: Any, x: torch.Tensor,
              y: torch.Tensor, adv_key: str) -> tuple[torch.Tensor, AttackResult | None]:
        """Adversarial examples of the cell's threat model (defense-independent ones from the cache)
        and the attack's result when it ran now."""
        art = self.artifacts
        if cell.threat != "adaptive":
            cached = art.adv_on_disk(adv_key)
            if cached is not None:
                return cached.to(self.device), None
        x, y = x.to(self.device), y.to(self.device)
        if cell.threat == "adaptive":
            defense.reset()  # as in predict(): the attack's draws do not depend on earlier cells
            if attack.needs_defense:  # stream-aware attacks replay the order predict() uses
                attack.bind(defense, stream_seed=cell.seed)
        target_model = self.attack_target(cell, model, defense)
        result = attack.run(target_model, x, y)
        return result.x_adv.detach(), result
