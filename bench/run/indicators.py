"""Indicators of attack failure (Pintor et al., "Indicators of Attack Failure: Debugging and Improving
Optimization of Adversarial Examples", NeurIPS 2022), computed for one gradient-attack cell.

Each indicator is ``{"fired": bool, "value": float, "n": points measured, "remedy": str}``:

1. unavailable gradients: the attack loss's input gradient at x is exactly zero or not finite for
   some point (the paper fires on any point); value = that share of up to ``GRAD_POINTS`` points.
2. unstable predictions: at x_adv, the mean over ``NOISE_DRAWS`` uniform draws in
   [-r/2, r/2] per pixel (kept inside the ball and [0, 1]) of |L(x_adv) - L(x_adv + noise)| / |L(x_adv)|,
   each point's value capped at 1, over up to ``NOISE_POINTS`` points; fires above ``UNSTABLE_MAX``
   (our threshold; the reference code returns the value only). r = 1/255 (the paper's 8/255 made a
   deterministic small CNN on digits read 0.17 where the loss at x_adv is near 0; a random defense
   changes the loss whatever the radius, a deterministic model's change shrinks with it).
3. silent success: an iterate on the path was adversarial (``first_success`` >= 0) but the returned
   point is not, on the model the attack attacked; fires on any point.
4. incomplete optimisation: per point the attack failed on, the loss trace normalised to [0, 1] and
   its running minimum still fell by more than ``INCOMPLETE_DELTA`` (the paper's 0.05) over the last
   ``max(2, ceil(0.2 steps))`` steps (the paper's last 10 steps of longer runs); fires when more than
   ``SHARE_MAX`` of those points do (the paper judges one point; a cell tolerates a few).
5. transfer failure (transfer and adaptive cells): adversarial on the model the attack attacked (the
   surrogate, BPDA / EOT's pipeline), not on the scored target; fires when more than ``SHARE_MAX`` of
   those points are.
6. unconstrained attack failure: the same attack with the largest budget the norm admits (step sizes
   scaled by the same factor, so an eps-relative step keeps its meaning) on up to
   ``UNBOUNDED_POINTS`` correctly classified points must fool them; fires when
   more than ``UNBOUNDED_MAX`` of them stay correct (a minimal-norm attack, unbounded already, is
   judged on the cell's own points at no extra cost; JSMA, capped by its share of features gamma, is
   rerun with gamma 1).

Silent success, transfer failure and a minimal-norm attack's unconstrained failure are judged on the
first ``JUDGE_POINTS`` points (``n`` says how many counted): a random pipeline's forward pass costs
as much as an attack step.

The trace-based ones (3, 4) need the attack's trace (kept beside cached examples, so cells of other
workers and later runs read it), so they are absent only for examples cached without one.
Defense-aware attacks other than BPDA / EOT (PGD-NN) optimise a criterion of their own and get only (4).
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from bench.core.contracts import Attack, AttackResult, project_l2, project_linf

GRAD_POINTS = 8
NOISE_POINTS = 8
NOISE_DRAWS = 3
#: points judged on the attacked model for silent success and transfer failure (a random pipeline such
#: as RIDE's costs as much per forward pass as an attack step)
JUDGE_POINTS = 16
NOISE_RADIUS = 1 / 255
UNSTABLE_MAX = 0.1
SHARE_MAX = 0.05
INCOMPLETE_DELTA = 0.05
UNBOUNDED_POINTS = 10
UNBOUNDED_MAX = 0.1

NAMES = ("unavailable_gradients", "unstable_predictions", "silent_success", "incomplete_optimisation",
         "transfer_failure", "unconstrained_failure")
REMEDIES = {
    "unavailable_gradients": "BPDA through the non-differentiable part, or a margin / logit loss instead of "
                             "softmax cross-entropy",
    "unstable_predictions": "EOT: average the loss over the defense's randomness",
    "silent_success": "return the best iterate, not the last one",
    "incomplete_optimisation": "more steps or a larger step size",
    "transfer_failure": "a better transfer source, or BPDA / an adaptive attack on the target itself",
    "unconstrained_failure": "the attack itself is broken (steps, step size or loss): fix it before trusting "
                             "the number",
}


#: Silent success of an attack that returns its final iterate on purpose (Attack.full_budget): judged on
#: another model or draw, the first adversarial iterate is not the better one to return.
FINAL_ITERATE_REMEDY = ("more or smaller steps, or EOT, so that the final iterate (returned on purpose: it is "
                        "judged on another model or draw) ends inside the adversarial region")


def _entry(name: str, fired: bool, value: float, n: int, remedy: str | None = None) -> dict[str, Any]:
    return {"fired": bool(fired), "value": round(float(value), 6), "n": int(n), "remedy": remedy or REMEDIES[name]}


def attacked_pair(attack: Any, model: Any) -> tuple[Any, Any]:
    """(attack whose loss and success test apply, the model it differentiated): a BPDA / EOT wrapper's
    inner attack and pipeline, else the attack and ``model`` itself."""
    inner, pipeline = getattr(attack, "inner", None), getattr(attack, "pipeline", None)
    if isinstance(inner, Attack) and callable(pipeline):
        return inner, pipeline(model)
    return attack, model


@torch.no_grad()
def _logits(model: Any, x: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.cat([model(x[i : i + batch]) for i in range(0, len(x), batch)])


def unavailable_gradients(attack: Attack, model: Any, x: torch.Tensor, y: torch.Tensor,
                          target: torch.Tensor | None) -> dict[str, Any]:
    """Share of points whose attack-loss input gradient is all zero or not finite (or has no path)."""
    x, y = x[:GRAD_POINTS], y[:GRAD_POINTS]
    t = None if target is None else target[:GRAD_POINTS]
    try:
        with torch.enable_grad():
            grad, _ = attack.loss_grad(model, x, y, t)
        flat = grad.flatten(1)
        bad = (flat.abs().amax(1) == 0) | ~torch.isfinite(flat).all(1)
    except RuntimeError:  # the graph does not reach the input (an interrupted computational graph)
        bad = torch.ones(len(x), dtype=torch.bool)
    share = float(bad.float().mean()) if len(x) else 0.0
    return _entry("unavailable_gradients", share > 0, share, len(x))


def _noise_radius(attack: Attack, shape: torch.Size) -> float:
    r = NOISE_RADIUS
    eps = getattr(attack, "eps", None)
    if eps is not None and not attack.minimal_norm:
        r = min(r, eps if attack.norm == "Linf" else 2 * eps / math.sqrt(math.prod(shape)))
    return r


def unstable_predictions(attack: Attack, model: Any, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor,
                         target: torch.Tensor | None, gen: torch.Generator) -> dict[str, Any]:
    """Mean relative change of the attack loss under small uniform noise at x_adv, capped at 1."""
    m = min(NOISE_POINTS, len(x))
    x, xa, y = x[:m], x_adv[:m], y[:m]
    t = None if target is None else target[:m]
    if m == 0:
        return _entry("unstable_predictions", False, 0.0, 0)
    r = _noise_radius(attack, x.shape[1:])
    with torch.no_grad():
        ref = attack.attack_loss(model(xa), y, t)
        denom = ref.abs().where(ref != 0, torch.ones_like(ref))
        rel = torch.zeros_like(ref)
        for _ in range(NOISE_DRAWS):
            noise = ((torch.rand(xa.shape, generator=gen) - 0.5) * r).to(xa.device, xa.dtype)
            xp = (xa + noise).clamp(0.0, 1.0)
            if not attack.minimal_norm and attack.eps is not None:  # stay inside the threat model
                xp = project_linf(xp, x, attack.eps) if attack.norm == "Linf" else project_l2(xp, x, attack.eps)
            rel += ((ref - attack.attack_loss(model(xp), y, t)).abs() / denom).clamp(max=1.0)
    value = float((rel / NOISE_DRAWS).mean())
    return _entry("unstable_predictions", value > UNSTABLE_MAX, value, m)


def incomplete_optimisation(trace: torch.Tensor, failed: torch.Tensor) -> dict[str, Any]:
    """Share of failed points whose normalised running-minimum loss still fell over the last steps."""
    steps = trace.shape[0]
    idx = failed.nonzero().squeeze(1).cpu()
    if steps < 2 or len(idx) == 0:
        return _entry("incomplete_optimisation", False, 0.0, len(idx))
    tr = trace[:, idx].float()
    tr = torch.where(torch.isfinite(tr), tr, tr.nan_to_num(posinf=1e30, neginf=-1e30))
    lo, hi = tr.min(0).values, tr.max(0).values
    norm = (tr - lo) / (hi - lo).where(hi > lo, torch.ones_like(hi))
    running = norm.cummin(0).values
    window = min(steps, max(2, math.ceil(0.2 * steps)))
    moved = running[-window] - running[-1] > INCOMPLETE_DELTA
    share = float(moved.float().mean())
    return _entry("incomplete_optimisation", share > SHARE_MAX, share, len(idx))


def unconstrained_failure(attack: Any, model: Any, x: torch.Tensor, y: torch.Tensor, correct: torch.Tensor,
                          target: torch.Tensor | None) -> dict[str, Any]:
    """Share of up to ``UNBOUNDED_POINTS`` correctly classified points that the attack with an
    unbounded budget (step sizes scaled with it) leaves correct on the model it attacks."""
    idx = correct.nonzero().squeeze(1)[:UNBOUNDED_POINTS].to(x.device)
    if len(idx) == 0:
        return _entry("unconstrained_failure", False, 0.0, 0)
    free = attack.unbounded(x.shape[1:])
    t = None if target is None else target[idx]
    res = free.run(model, x[idx], y[idx], None if t is None else t.cpu())
    judge, attacked = attacked_pair(attack, model)
    fooled = torch.zeros(len(idx), dtype=torch.bool, device=x.device)
    if res.first_success is not None:  # the attack's own verdict on the model it attacked
        fooled |= res.first_success.to(x.device) >= 0
    rest = (~fooled).nonzero().squeeze(1)
    if len(rest):
        fooled[rest] = judge.is_success(_logits(attacked, res.x_adv[rest], judge.batch_size), y[idx][rest],
                                        None if t is None else t[rest])
    share = float((~fooled).float().mean())
    return _entry("unconstrained_failure", share > UNBOUNDED_MAX, share, len(idx))


def compute(attack: Any, model: Any, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor,
            adv_pred: torch.Tensor, clean_ok: torch.Tensor, *, result: AttackResult | None,
            transfer: bool, seed: int = 0, memo: dict[str, Any] | None = None) -> dict[str, Any]:
    """The record fields: ``indicators`` (name -> fired / value / n / remedy), ``indicators_fired`` (how
    many fired) and ``indicator_seconds`` (their own cost). ``model`` is what the attack was run on
    (the surrogate, the defense's attack surface); ``adv_pred`` the scored predictions on x_adv.
    ``memo`` (one per set of adversarial examples) keeps what depends on the attack alone, so cells
    scoring the same examples on other defenses pay only for what depends on the defense."""
    memo = {} if memo is None else memo
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    dev = x_adv.device
    x, y = x.to(dev), y.to(dev)
    clean_ok, adv_pred = clean_ok.to(dev), adv_pred.to(dev)
    target = None if result is None or result.target is None else result.target.to(dev)
    judge, attacked = attacked_pair(attack, model)
    out: dict[str, dict[str, Any]] = {}
    trace = None if result is None else result.loss_trace
    first = None if result is None else result.first_success
    scored_fooled = adv_pred != y if target is None else adv_pred == target
    own_criterion = bool(getattr(attack, "needs_defense", False)) and judge is attack  # PGD-NN and kin
    if not own_criterion:
        if "fooled" not in memo:
            memo["unavailable_gradients"] = unavailable_gradients(judge, attacked, x, y, target)
            memo["unstable_predictions"] = unstable_predictions(judge, attacked, x, x_adv, y, target, gen)
            k = JUDGE_POINTS
            memo["fooled"] = judge.is_success(_logits(attacked, x_adv[:k], judge.batch_size), y[:k],
                                              None if target is None else target[:k])
        fooled = memo["fooled"]
        j = len(fooled)
        out["unavailable_gradients"] = memo["unavailable_gradients"]
        out["unstable_predictions"] = memo["unstable_predictions"]
        if first is not None:
            silent = (first[:j].to(dev) >= 0) & ~fooled
            out["silent_success"] = _entry("silent_success", bool(silent.any()), float(silent.float().mean()), j,
                                           FINAL_ITERATE_REMEDY if getattr(judge, "keep_last", False) else None)
        if transfer:
            pts = fooled & clean_ok[:j]
            miss = pts & ~scored_fooled[:j]
            share = float(miss.sum()) / max(int(pts.sum()), 1)
            out["transfer_failure"] = _entry("transfer_failure", share > SHARE_MAX, share, int(pts.sum()))
        if attack.minimal_norm and not attack.capped:
            pts = clean_ok[:j]
            share = float((pts & ~fooled).sum()) / max(int(pts.sum()), 1)
            out["unconstrained_failure"] = _entry("unconstrained_failure", share > UNBOUNDED_MAX, share, int(pts.sum()))
        else:
            if "unconstrained_failure" not in memo:
                # correct on the model the attack runs on, not on the scored defense: the memo serves
                # every cell scoring these examples, whichever of them comes first
                m = min(len(x), 4 * UNBOUNDED_POINTS)
                own_ok = torch.zeros(len(x), dtype=torch.bool, device=dev)
                with torch.no_grad():
                    own_ok[:m] = _logits(attacked, x[:m], judge.batch_size).argmax(1) == y[:m]
                memo["unconstrained_failure"] = unconstrained_failure(attack, model, x, y, own_ok, target)
            out["unconstrained_failure"] = memo["unconstrained_failure"]
    if trace is not None:
        out["incomplete_optimisation"] = incomplete_optimisation(trace, (clean_ok & ~scored_fooled).cpu())
    ordered = {k: out[k] for k in NAMES if k in out}
    return {"indicators": ordered, "indicators_fired": sum(v["fired"] for v in ordered.values()),
            "indicator_seconds": round(time.perf_counter() - start, 3)}
