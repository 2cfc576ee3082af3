"""PGD-NN and PGD-NN2: defense-aware attacks on the nearest-neighbour step (Wu, Yuan, Wu, ICML 2020).

The attacker knows the database the defense searches (D for DeepNN, D' for WebNN / RMC / RMC+), its
deep features and the fixed model theta*. ``pgd-nn`` (RMC paper section 5.1) runs Linf PGD that
maximises CE((1/K) sum_{x' in N'(x + delta)} f(x'; theta*), y), so the neighbourhood holds as few
examples of class y as possible. ``pgd-nn2`` (supplement C.1) minimises H(q) - ||q||^2, q = that
averaged prediction with class y removed and renormalised, so the neighbours concentrate on one
wrong class.

Differentiable neighbour selection (choice; the paper only says it backpropagates "through" the
K-NN search): at every step the defense's own faiss index gives the exact top M = ``candidates`` x K
database rows for the current features (M capped at the database size). Torch distances d_k between
``model.features(x_adv)`` and those rows' stored features give soft weights
w = softmax(-d / (``temperature`` x median_k d_k)) (the median makes the temperature independent of
the feature scale), and the soft neighbourhood prediction is sum_k w_k p_k, p_k the fixed model's
softmax on row k (``defense.row_probs()``). Whether the attack succeeded is judged with the defense's
own ``score_rows`` on the exact top-K rows (the method its ``predict`` uses). The defense is seen only
through the declared ``NeighbourScorer`` interface (bench.core.contracts); the gradient reaches x only
through ``defense.embed``.

``objective="guide"`` (pgd-nn; Sitawarin & Wagner, "On the robustness of deep k-nearest neighbors",
2019) instead pulls the features toward the mean feature of the K nearest database rows of a guide
class and pushes them away from the mean of the K nearest rows of class y (rows belong to the class
the fixed model predicts for them, which is what the defense averages). The guide class, fixed at the
random start, is the most frequent wrong vote among the current K neighbours (the target when
targeted).

Per example we return the iterate with the lowest margin of the defense's hard K-NN prediction
(score of y minus the best other score, read off the exact top-K the step already searched), so for
DeepNN and WebNN the result fools the defense whenever any iterate did; for RMC the margin is a proxy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from attacks.pgd import PGD
from bench.core.contracts import (
    Attack,
    AttackResult,
    Model,
    NeighbourScorer,
    StatefulDefense,
    Traced,
    project_linf,
    uniform_like,
)
from bench.core.errors import BenchError
from bench.core.methods import register_attack as register

#: Elements of the (batch, candidates, feature dim) gather one chunk may hold (about 256 MB float32).
GATHER_BUDGET = 1 << 26


@dataclass
class _Database:
    """The rows the defense's index searches, on the attack device."""

    features: torch.Tensor  # (N, d)
    sqnorm: torch.Tensor  # (N,)
    probs: torch.Tensor  # (N, C) fixed model's softmax
    labels: torch.Tensor  # (N,) stored labels (DkNN conformal votes use them)
    votes: torch.Tensor  # (N,) argmax of probs: the class a row votes for
    k: int
    m: int


class NeighbourPGD(Attack):
    """Linf PGD through a soft (temperature-softmax) version of the defense's K-NN search."""

    needs_defense = True
    # the paper's four; a plugin K-NN defense (a NeighbourScorer) is attacked from Python via bind()
    applies_to: ClassVar[tuple[str | type, ...]] = ("deepnn", "webnn", "rmc", "rmc-plus")
    dataset_defaults = dict(PGD.dataset_defaults)

    def __init__(self, eps: float = 0.3, steps: int = 10, step_size: float | None = None,
                 random_start: bool = True, candidates: int = 4, temperature: float = 0.3, **kw: Any) -> None:
        super().__init__(eps=eps, steps=steps, step_size=step_size, random_start=random_start, **kw)
        if self.norm != "Linf":
            raise BenchError(f"{type(self).__name__} is an Linf attack, got norm {self.norm!r}")
        if int(candidates) < 1:
            raise BenchError(f"candidates must be at least 1 (a multiple of K), got {candidates}")
        if float(temperature) <= 0:
            raise BenchError(f"temperature must be positive, got {temperature}")
        self.candidates, self.temperature = int(candidates), float(temperature)
        if self.step_size is None:
            self.step_size = 2.5 * self.eps / self.steps
        self._db: _Database | None = None

    # -- public --------------------------------------------------------------------------------
    def run(self, model: Model, x: torch.Tensor, y: torch.Tensor,
            target: torch.Tensor | None = None) -> AttackResult:
        d = self.defense
        if not isinstance(d, NeighbourScorer):
            raise BenchError(f"{self.registry_name} needs a bound nearest-neighbour runtime defense (a "
                             "defenses.NeighbourScorer: deepnn, webnn, rmc, rmc-plus): use threat = \"adaptive\" "
                             "with one of them")
        if x.dim() == 4 and tuple(x.shape[1:]) != tuple(d.row_image_shape()):
            raise BenchError(f"{self.registry_name}: images of shape {tuple(x.shape[1:])} do not match the "
                             f"defense's database {tuple(d.row_image_shape())}")
        # A stateful defense (RMC+ rewrites D') is attacked as its stream starts: from its initial
        # state, which the runner's fresh stream also starts from; its own state is put back after.
        state = d.snapshot() if isinstance(d, StatefulDefense) else None
        try:
            if state is not None:
                d.reset()
            self._db = self._database(x.device)
            return super().run(model, x, y, target)
        finally:
            self._db = None
            if state is not None:
                d.restore(state)

    def perturb(self, model: Model, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                gen: torch.Generator) -> Traced:
        db = self._db
        assert db is not None
        chunk = max(1, GATHER_BUDGET // (db.m * db.features.shape[1]))
        out = [self._run(x[i : i + chunk], y[i : i + chunk], None if target is None else target[i : i + chunk], gen)
               for i in range(0, len(x), chunk)]
        return Traced(torch.cat([o.x_adv for o in out]), torch.cat([o.loss_trace for o in out], dim=1),
                      torch.cat([o.first_success for o in out]))

    # -- the soft neighbourhood ------------------------------------------------------------------
    def _database(self, device: torch.device) -> _Database:
        d = self.defense
        probs, labels = d.row_probs(), d.row_labels()  # the rows the defense's index searches
        feats = d.row_features().to(device)
        if len(feats) != len(probs):
            raise BenchError(f"{self.registry_name}: the defense's index ({len(feats)} rows) and database "
                             f"({len(probs)} rows) disagree")
        probs = probs.to(device).float()
        k = min(int(d.k), len(feats))
        return _Database(feats, feats.pow(2).sum(1), probs, labels.to(device), probs.argmax(1), k,
                         min(self.candidates * k, len(feats)))

    def _neighbourhood(self, x_adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(features, soft neighbourhood prediction, exact top-K rows) of x_adv."""
        db = self._db
        f = self.defense.embed(x_adv).flatten(1).float()
        idx = self.defense.search_rows(f.detach(), db.m).to(f.device)
        cand = db.features[idx]  # (B, M, d), no gradient
        d2 = (f * f).sum(1, keepdim=True) + db.sqnorm[idx] - 2 * torch.bmm(cand, f[:, :, None]).squeeze(2)
        dist = d2.clamp_min(1e-12).sqrt()
        scale = dist.detach().median(1, keepdim=True).values.clamp_min(1e-12)
        w = torch.softmax(-dist / (self.temperature * scale), dim=1)
        soft = torch.bmm(w[:, None, :], db.probs[idx]).squeeze(1)
        return f, soft, idx[:, : db.k]

    def _hard_scores(self, top: torch.Tensor) -> torch.Tensor:
        """The defense's own K-NN scores (argmax = its prediction) from the exact top-K rows."""
        return self.defense.score_rows(top)

    @staticmethod
    def _margin_key(scores: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """Lower is better; negative exactly when the hard prediction is wrong (or the target)."""
        good = y if target is None else target
        s_good = scores.gather(1, good[:, None]).squeeze(1)
        other = scores.scatter(1, good[:, None], float("-inf")).amax(1)
        fooled = scores.argmax(1) != y if target is None else scores.argmax(1) == target
        return (s_good - other) - fooled.float()

    # -- the attack loop -------------------------------------------------------------------------
    def begin(self, f: torch.Tensor, top: torch.Tensor, y: torch.Tensor,
              target: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Per-batch state fixed at the start point (the guide objective's class means)."""
        return {}

    def loss(self, f: torch.Tensor, soft: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                  state: dict[str, torch.Tensor]) -> torch.Tensor:  # pragma: no cover - abstract
        """Per-example value the attack ascends."""
        raise NotImplementedError

    def _run(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
             gen: torch.Generator) -> Traced:
        """The lowest-margin iterate per example; the trace is the hard K-NN margin key of every
        iterate (negative exactly when it fools the defense), the final one included."""
        eps, alpha = self.eps, self.step_size
        x_adv = x.clone()
        if self.random_start:
            x_adv = (x_adv + uniform_like(x, -eps, eps, gen)).clamp_(0.0, 1.0)
        best = x_adv.clone()
        best_key = torch.full((len(x),), float("inf"), device=x.device)
        state: dict[str, torch.Tensor] | None = None
        trace = torch.empty(self.steps + 1, len(x), device=x.device)
        first = torch.full((len(x),), -1, dtype=torch.long, device=x.device)
        for step in range(self.steps + 1):
            last = step == self.steps  # one more search scores the final iterate
            x_in = x_adv.detach().requires_grad_(not last)
            with torch.set_grad_enabled(not last):
                f, soft, top = self._neighbourhood(x_in)
                with torch.no_grad():
                    key = self._margin_key(self._hard_scores(top), y, target)
                trace[step] = key
                first[(first < 0) & (key < 0)] = step
                better = key < best_key
                best[better], best_key[better] = x_adv[better], key[better]
                if last:
                    break
                if state is None:
                    state = self.begin(f.detach(), top, y, target)
                loss = self.loss(f, soft, y, target, state).sum()
            (grad,) = torch.autograd.grad(loss, x_in)
            x_adv = project_linf(x_adv + alpha * grad.sign(), x, eps)
        return Traced(best, trace, first)


@register("pgd-nn")
class PGDNN(NeighbourPGD):
    """PGD-NN (RMC section 5.1): maximise CE of the soft neighbourhood prediction (or ``objective="guide"``)."""

    def __init__(self, objective: str = "ce", **kw: Any) -> None:
        super().__init__(**kw)
        if objective not in ("ce", "guide"):
            raise BenchError(f"pgd-nn objective must be 'ce' or 'guide', got {objective!r}")
        self.objective = objective

    def begin(self, f: torch.Tensor, top: torch.Tensor, y: torch.Tensor,
              target: torch.Tensor | None) -> dict[str, torch.Tensor]:
        if self.objective != "guide":
            return {}
        db = self._db
        if target is None:
            votes = F.one_hot(db.votes[top], db.probs.shape[1]).float().sum(1)
            votes = votes + db.probs[top].mean(1)  # ties (and no wrong vote at all): the likelier class
            guide = votes.scatter(1, y[:, None], float("-inf")).argmax(1)
        else:
            guide = target
        return {"toward": self._class_mean(f, guide), "away": self._class_mean(f, y)}

    def _class_mean(self, f: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        """Mean feature of the K database rows voting ``cls[i]`` nearest to f[i] (loop over classes)."""
        db = self._db
        out = torch.zeros_like(f)
        for c in cls.unique().tolist():
            rows = (db.votes == c).nonzero().squeeze(1)
            sel = (cls == c).nonzero().squeeze(1)
            if len(rows) == 0:
                out[sel] = f[sel]  # no row of that class: this term has no pull
                continue
            nearest = torch.cdist(f[sel], db.features[rows]).topk(min(db.k, len(rows)), largest=False)[1]
            out[sel] = db.features[rows][nearest].mean(1)
        return out

    def loss(self, f: torch.Tensor, soft: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                  state: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.objective == "guide":
            return (f - state["away"]).pow(2).sum(1) - (f - state["toward"]).pow(2).sum(1)
        logp = soft.clamp_min(1e-12).log()
        if target is None:
            return F.nll_loss(logp, y, reduction="none")
        return -F.nll_loss(logp, target, reduction="none")


@register("pgd-nn2")
class PGDNN2(NeighbourPGD):
    """PGD-NN2 (RMC supplement C.1): minimise H(q) - ||q||^2, q = soft prediction without y, renormalised."""

    def loss(self, f: torch.Tensor, soft: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                  state: dict[str, torch.Tensor]) -> torch.Tensor:
        q = soft.scatter(1, y[:, None], 0.0)
        q = q / q.sum(1, keepdim=True).clamp_min(1e-12)
        if target is not None:  # targeted analogue: concentrate the wrong mass on the target
            return q.gather(1, target[:, None]).squeeze(1).clamp_min(1e-12).log()
        entropy = -(q * q.clamp_min(1e-12).log()).sum(1)
        return -(entropy - q.pow(2).sum(1))
