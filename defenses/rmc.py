"""RMC and RMC+: runtime masking and cleansing (Wu, Yuan, Wu, ICML 2020; Algorithms 1 and 2).

PREPARE: D' = D plus adversarial copies of D against the fixed model theta*, and the fixed model's
deep features of D' in a faiss index. PREDICT, per test point in stream order: N'(x) = the K
nearest examples of D'; its nearest 20% are the validation split; local adaptation = Adam on the
rest, epoch by epoch, until the validation loss has not improved for ``patience`` epochs (cap
``max_epochs``), keeping the best weights; predict with them; then calibration: the same loop on K
examples sampled from D. Weights and the one Adam optimizer carry over to the next test point.
BatchNorm stays in eval mode throughout (running statistics frozen, affine parameters adapt).
RMC+ additionally recomputes a fraction ``delta`` of the adversarial examples in N'(x) against the
adapted weights and writes them back into D' and the index.

The non-masking RMC (Section 5.3, Table 7) predicts each point with the weights adapted to the
earlier points only, and adapts to the point's neighbourhood (and calibrates) afterwards, for the
later points: the cleansing of earlier adaptations stays, the masking of the current one goes.
"""

from __future__ import annotations

import copy
import time
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from bench.core import progress
from bench.core.contracts import StatefulDefense
from bench.core.data import Dataset
from bench.core.errors import BenchError
from bench.core.methods import register_defense as register
from defenses.database import attack_params_for, compute_features
from defenses.neighbors import NeighbourDefense

PRECISIONS = ("float32", "bfloat16")  #: RMC's adaptation precision (``precision``)


@register("rmc")
class RMC(NeighbourDefense, StatefulDefense):
    """Runtime masking and cleansing: adapt the weights to each test point's neighbourhood in D'."""

    trains_per_point = True

    #: True: adapt to x's neighbourhood, then predict x (Algorithm 1); False: the non-masking RMC.
    masking: ClassVar[bool] = True
    dataset_defaults = {
        # digits (our choice): small K and few epochs so a 100-point stream takes seconds on a CPU.
        "digits": {"k": 128, "copies": 1, "lr": 2.5e-4, "patience": 2, "max_epochs": 8, "db_params": {"eps": 0.1}},
        "mnist": {"k": 1024, "copies": 1, "lr": 2e-4, "db_params": {"eps": 0.3}},
        "cifar10": {"k": 1024, "copies": 4, "lr": 2.5e-5,
                    "db_params": {"eps": 8 / 255, "steps": 10, "step_size": 2 / 255}},
    }

    def __init__(self, k: int = 1024, lr: float = 2e-4, batch_size: int = 128, val_fraction: float = 0.2,
                 patience: int = 5, max_epochs: int = 100, calibrate: bool = True,
                 precision: str = "float32", min_delta: float = 0.0, **kw) -> None:
        """``precision``: ``"float32"`` (default) or ``"bfloat16"``, the adaptation's and calibration's
        forward and backward passes under bfloat16 autocast (weights, Adam state, validation and
        predictions stay float32): 1.68x faster a ResNet-32 step on a CPU with AVX512-BF16
        (bench.benchmarks.adapt_precision), not a setting of the paper. ``min_delta``: an epoch counts
        as an improvement only when the validation loss falls by more than this share of the best so
        far (0, the default: by more than 1e-6 absolute, as before), so a fit whose neighbours' loss has
        stopped falling in earnest runs out of patience sooner; not a setting of the paper, which gives
        only the patience (bench.benchmarks.rmc_cifar measures what it saves and changes)."""
        super().__init__(k=k, **kw)
        if precision not in PRECISIONS:
            raise BenchError(f"rmc precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.precision = precision
        if not 0 < float(val_fraction) < 1:
            raise BenchError(f"val_fraction must lie in (0, 1), got {val_fraction}")
        self.lr, self.batch_size, self.val_fraction = float(lr), int(batch_size), float(val_fraction)
        self.patience, self.max_epochs, self.calibrate = int(patience), int(max_epochs), bool(calibrate)
        if not 0 <= float(min_delta) < 1:
            raise BenchError(f"rmc min_delta must lie in [0, 1), got {min_delta}")
        self.min_delta = float(min_delta)
        self.last_delays: list[float] = []
        self.last_timing: dict[str, float] = {}
        #: per point of the last predict: epochs of adaptation / calibration and why each stopped
        self.last_stats: list[dict[str, Any]] = []
        self._point_stats: dict[str, Any] = {}
        self.last_stop = "cap"

    # -- state -----------------------------------------------------------------------------------
    def prepare(self, model: nn.Module, train_set: Dataset | None = None) -> RMC:
        super().prepare(model, train_set)
        self.adapted = copy.deepcopy(model).eval()
        for p in self.adapted.parameters():
            p.requires_grad_(True)
        # foreach: one multi-tensor kernel per Adam op instead of a Python loop over the parameters
        # (torch's CPU default); the same arithmetic, so the same weights (tests/test_rmc_speed.py).
        self.optimizer = torch.optim.Adam(self.adapted.parameters(), lr=self.lr, foreach=True)
        self._best = None
        self.generator = torch.Generator().manual_seed(self.seed)
        self._initial = self.snapshot()
        return self

    def snapshot(self) -> dict[str, Any]:
        """The complete state: adapted weights, Adam state, the sampling generator (and D' for RMC+)."""
        return {"model": copy.deepcopy(self.adapted.state_dict()),
                "optimizer": copy.deepcopy(self.optimizer.state_dict()),
                "generator": self.generator.get_state()}

    def restore(self, state: dict[str, Any]) -> None:
        self.adapted.load_state_dict(state["model"])
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self.generator.set_state(state["generator"])

    def reset(self) -> None:
        self.restore(self._initial)

    @property
    def adapted_model(self) -> nn.Module:
        return self.adapted

    # -- algorithm -------------------------------------------------------------------------------
    def _epoch_loss(self, x: torch.Tensor, y: torch.Tensor) -> float:
        with torch.no_grad():
            return float(F.cross_entropy(self.adapted(x), y))

    def _best_buffers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(live tensor, preallocated copy) for every entry of the adapted state dict: the best
        weights are copied in place, instead of a deep copy of the state dict per improving epoch."""
        if getattr(self, "_best", None) is None:
            live = [t.detach() for t in self.adapted.state_dict(keep_vars=True).values()]
            self._best = [(t, torch.empty_like(t)) for t in live]
        return self._best

    def improvement(self, best_loss: float) -> float:
        """How far the validation loss must fall below ``best_loss`` for an epoch to count as better."""
        return max(1e-6, self.min_delta * abs(best_loss))

    def fit_early_stopped(self, x: torch.Tensor, y: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor) -> int:
        """Adam epochs on (x, y) until the validation loss stalls; keeps the best weights. Returns epochs
        (``last_stop`` says why it stopped: ``"early"``, patience ran out, or ``"cap"``, max_epochs)."""
        self.adapted.eval()  # BN statistics frozen; dropout off
        best = self._best_buffers()
        best_loss, improved, stall, done = self._epoch_loss(x_val, y_val), False, 0, 0
        self.last_stop = "cap"
        n, bs = len(x), self.batch_size
        model, opt = self.adapted, self.optimizer
        for epoch in range(1, self.max_epochs + 1):
            done = epoch
            perm = torch.randperm(n, generator=self.generator)
            for i in range(0, n, bs):
                idx = perm[i : i + bs]
                with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.precision == "bfloat16"):
                    loss = F.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            val = self._epoch_loss(x_val, y_val)
            if val < best_loss - self.improvement(best_loss):
                best_loss, improved, stall = val, True, 0
                with torch.no_grad():
                    torch._foreach_copy_([b for _, b in best], [t for t, _ in best])
            else:
                stall += 1
                if stall >= self.patience:
                    self.last_stop = "early"
                    break
        if improved:  # never improved: the last epoch's weights stay (as before this was optimised)
            with torch.no_grad():
                torch._foreach_copy_([t for t, _ in best], [b for _, b in best])
        return done

    def split_neighbours(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(train, validation) rows of a neighbourhood ``idx``, nearest first: the nearest
        ``val_fraction`` validate the adaptation's early stop."""
        n_val = max(1, int(round(len(idx) * self.val_fraction)))
        return idx[n_val:], idx[:n_val]  # nearest first: the nearest 20% validate

    def adapt(self, x_point: torch.Tensor) -> torch.Tensor:
        """Local adaptation to one test point (1, C, H, W): returns the indices N'(x) it used."""
        dev = self.device
        feats = self.embed(x_point.to(dev)).detach()
        idx = self.index.search(feats, self.k)[1][0]
        train_idx, val_idx = self.split_neighbours(idx)
        db = self.database
        epochs = self.fit_early_stopped(db.x[train_idx].to(dev), db.y[train_idx].to(dev),
                                        db.x[val_idx].to(dev), db.y[val_idx].to(dev))
        self._point_stats = {"adapt_epochs": epochs, "adapt_stop": self.last_stop}
        return idx

    def calibrate_step(self) -> None:
        """Calibration on K examples sampled from D (the clean training set)."""
        dev = self.device
        idx = torch.randperm(len(self.train_set), generator=self.generator)[: self.k]
        train_idx, val_idx = self.split_neighbours(idx)
        ts = self.train_set
        epochs = self.fit_early_stopped(ts.x[train_idx].to(dev), ts.y[train_idx].to(dev),
                                        ts.x[val_idx].to(dev), ts.y[val_idx].to(dev))
        self._point_stats.update(calib_epochs=epochs, calib_stop=self.last_stop)

    def refresh_database(self, neighbours: torch.Tensor) -> None:
        """After each prediction: RMC+ rewrites part of D' here (RMC: nothing)."""

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Process the points of x in order, one at a time, adapting as the stream goes."""
        out, delays, stats = [], [], []
        timing = {"search_and_adapt": 0.0, "predict": 0.0, "calibrate": 0.0, "refresh": 0.0}
        for i in progress.steps(range(len(x)), f"{getattr(self, 'registry_name', 'rmc')} stream"):
            t0 = time.perf_counter()
            xi = x[i : i + 1].to(self.device)
            if not self.masking:  # the weights adapted to earlier points only
                with torch.no_grad():
                    out.append(self.adapted(xi).detach().cpu())
            t1 = time.perf_counter()
            idx = self.adapt(xi)
            if self.masking:
                with torch.no_grad():
                    out.append(self.adapted(xi).detach().cpu())
            t2 = time.perf_counter()
            self.notify_prediction()  # observers see the weights that just predicted
            self.refresh_database(idx)
            t3 = time.perf_counter()
            if self.calibrate:
                self.calibrate_step()
            t4 = time.perf_counter()
            if self.masking:
                timing["search_and_adapt"] += t1 - t0
                timing["predict"] += t2 - t1
            else:
                timing["predict"] += t1 - t0
                timing["search_and_adapt"] += t2 - t1
            timing["refresh"] += t3 - t2
            timing["calibrate"] += t4 - t3
            delays.append(t4 - t0)
            stats.append(self._point_stats)
        self.last_delays, self.last_timing, self.last_stats = delays, timing, stats
        return torch.cat(out) if out else torch.empty(0, 0)


@register("rmc-nonmasking")
class RMCNonMasking(RMC):
    """The non-masking RMC (RMC paper Section 5.3, Table 7): no local adaptation for the current point.

    Point i is predicted with the weights adapted to points 1..i-1 (and calibrated), so a PGD-Skip
    attacker differentiates exactly the network that classifies its point; only then does the
    defense adapt to x_i's neighbourhood in D' and calibrate, for the points after i."""

    masking = False


@register("rmc-plus")
class RMCPlus(RMC):
    """RMC+ (Algorithm 2): also refresh a fraction ``delta`` of N'(x)'s adversarial examples in D'."""

    dataset_defaults = {k: {**v, "delta": 0.5} for k, v in RMC.dataset_defaults.items()}

    def __init__(self, delta: float = 0.5, **kw) -> None:
        super().__init__(**kw)
        if not 0 <= float(delta) <= 1:
            raise BenchError(f"delta must lie in [0, 1], got {delta}")
        self.delta = float(delta)
        if self.database_kind == "disk":
            raise BenchError("rmc-plus rewrites D' in place, which the on-disk D' does not support yet; "
                             "use database = \"memory\"")

    def snapshot(self) -> dict[str, Any]:
        state = super().snapshot()
        state["db_x"] = self.database.x.clone()
        state["db_features"] = self.database.features.clone()
        return state

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        if not torch.equal(self.database.x, state["db_x"]):
            self.database.x.copy_(state["db_x"])
            self.database.features.copy_(state["db_features"])
            self.index.replace(torch.arange(len(self.database.x)), self.database.features)
            self.database_changed()

    def refresh_database(self, neighbours: torch.Tensor) -> None:
        from bench.core.methods import create_attack

        adv = neighbours[self.database.is_adv[neighbours]]
        n = int(round(len(adv) * self.delta))
        if n == 0:
            return
        pick = adv[torch.randperm(len(adv), generator=self.generator)[:n]]
        db = self.database
        clean_of = pick % len(self.train_set)  # copy c of example i sits at i + (c + 1) |D|
        name = self.db_attacks[0]
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator))
        atk = create_attack(name, **{**attack_params_for(name, self.db_params), "seed": seed})
        model = self.adapted
        for p in model.parameters():
            p.requires_grad_(False)
        try:
            x_new = atk(model, self.train_set.x[clean_of].to(self.device), db.y[pick].to(self.device)).cpu()
        finally:
            for p in model.parameters():
                p.requires_grad_(True)
        x_new = (x_new * 255).round() / 255  # D' is stored at uint8 precision
        db.x[pick] = x_new
        db.features[pick] = compute_features(self.model, x_new, layer=self.features)
        self.index.replace(pick, db.features[pick])
        self.database_changed()
