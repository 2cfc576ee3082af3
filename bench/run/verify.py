"""The binarization test (Zimmermann, Brendel, Tramer and Carlini, "Increasing Confidence in Adversarial
Robustness Evaluations", NeurIPS 2022): does the attack under test find an adversarial example where
one provably exists?

Per test point x the test builds a two-class task on the defended model's penultimate features:
``inner`` points drawn within ``eta * eps`` of x (x itself included, label 0) and ``boundary``
points on the surface of the eps ball (Linf: its corners; L2: the sphere, rescaled so that the
point still lies at distance eps after clipping to [0, 1]; label 1). An unregularised logistic
regression fitted on their features must separate them exactly (else x is discarded and counted);
its decision boundary is then moved close to the boundary points (the authors' "decision boundary
closeness") and it replaces the model's last layer. The boundary points lie inside the ball and in
[0, 1] and are classified 1 through the defended pipeline, so an adversarial example exists. The
attack, configured as the grid configures it, runs from x with label 0 exactly as the grid runs it
(base threat: against the binarized network; adaptive: against the defense's attack surface built on
the binarized network); it succeeds when the defended pipeline classifies its point 1 and the point
lies in the ball and in [0, 1]. A pass is at least 95% success. Random sampling (points drawn
uniformly in the ball) is the baseline: a test on which random points succeed says little.

Ten boundary points by default, where the authors' case studies use one: on the digits tiny-cnn (128
post-ReLU features) a readout fitted to a single random corner often rests on a unit that is off at x
and at every inner point, where no gradient reaches it, and a 100-step PGD then missed 1 point in 20
(10 boundary points: none), while the guarantee and the random baseline stay as they are.

Reference: google-research/active-adversarial-tests, active_tests/decision_boundary_binarization.py
(999 inner points and 1 boundary point, eta = 0.95, sklearn logistic regression, "fixed" logit
rescaling); this is a re-implementation on the harness's models, defenses and attacks.
"""

from __future__ import annotations

import copy
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

import defenses
from bench.core.contracts import NeighbourScorer, StatefulDefense
from bench.core.errors import BenchError
from bench.core.methods import ATTACKS, create_attack
from bench.core.stats import wilson_interval
from bench.run.artifacts import ArtifactStore, resolve_params
from bench.run.audit import TOLERANCE, perturbation_norms
from bench.run.evaluation import fix_threads
from bench.spec.grid import Cell

#: The success rate an attack must reach to pass (Zimmermann et al.: a correct attack breaks every point).
PASS_RATE = 0.95
#: Inner points lie within ETA * eps of x (the authors' relative inner-boundary gap of 5%).
ETA = 0.95
#: Feature draws per point of a random defense (the authors' inference repetitions), unless set.
RANDOM_REPEATS = 2


@dataclass
class Settings:
    """How the binarized tasks are built (defaults: the authors' case studies)."""

    n: int = 50  #: test points (the first n of the grid's test split)
    inner: int = 999  #: inner points per test point, x included
    boundary: int = 10  #: boundary points per test point (the authors: 1; see the module doc)
    random: int = 100  #: uniform draws in the ball per test point for the random baseline
    closeness: float = 0.999  #: how far the readout's boundary moves towards the boundary points (0: not)
    repeats: int | None = None  #: feature draws per point (None: RANDOM_REPEATS for a random defense, else 1)
    eps: float | None = None  #: the ball of a minimal-norm attack (which has none of its own)
    seed: int = 0


@dataclass
class Outcome:
    """One (defense, attack) configuration's result."""

    defense: str
    attack: str
    threat: str
    norm: str
    eps: float | None
    tested: int = 0
    successes: int = 0
    discarded: int = 0
    random_hits: int = 0  #: test points where some random draw in the ball was classified 1
    random_points: float = 0.0  #: fraction of all random draws classified 1
    seconds: float = 0.0
    refused: str = ""  #: why the test does not apply (nothing ran)
    discard_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float | None:
        return self.successes / self.tested if self.tested else None

    @property
    def ci(self) -> tuple[float, float] | None:
        return wilson_interval(self.successes, self.tested) if self.tested else None

    @property
    def random_rate(self) -> float | None:
        return self.random_hits / self.tested if self.tested else None

    @property
    def passed(self) -> bool:
        return bool(self.tested) and self.successes / self.tested >= PASS_RATE

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(success_rate=self.rate, success_ci=self.ci, random_rate=self.random_rate, passed=self.passed)
        return out


# -- the model's last layer ------------------------------------------------------------------------
class Readout(nn.Module):
    """Stands in for the model's last linear layer: a two-class linear readout ``(-s/2, s/2)`` with
    ``s = w . z + b``, and, while ``capture`` is a list, the recorder of the features ``z`` it sees."""

    def __init__(self, dim: int, conv: bool) -> None:
        super().__init__()
        self.conv = conv  # a 1x1 convolution on a 1x1 map (network-in-network heads)
        self.register_buffer("w", torch.zeros(dim))
        self.register_buffer("b", torch.zeros(()))
        self.capture: list[torch.Tensor] | None = None

    def set(self, w: torch.Tensor, b: float) -> None:
        self.w.copy_(w.to(self.w))
        self.b.fill_(float(b))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        flat = z.flatten(1)
        if self.capture is not None:
            self.capture.append(flat.detach().cpu())
        s = flat @ self.w + self.b
        out = torch.stack([-s / 2, s / 2], dim=1)
        return out.view(len(z), 2, 1, 1) if self.conv else out


def last_layer(model: nn.Module, x: torch.Tensor) -> tuple[str, nn.Module]:
    """The name and module of ``model``'s last layer, which must be linear and produce the logits
    (an ``nn.Linear``, or a 1x1 ``nn.Conv2d`` on a 1x1 map); refuses any other model in one line."""
    calls: list[tuple[str, nn.Module, torch.Tensor, torch.Tensor]] = []
    names = {m: n for n, m in model.named_modules()}
    hooks = [m.register_forward_hook(lambda m, i, o: calls.append((names[m], m, i[0], o)))
             for m in model.modules() if not list(m.children()) and isinstance(m, nn.Module)]
    try:
        with torch.no_grad():
            logits = model(x[:2])
    finally:
        for h in hooks:
            h.remove()
    what = type(model).__name__
    if not calls:
        raise BenchError(f"model {what} has no layers to replace; the binarization test needs a network whose "
                         "last layer is linear")
    name, module, inp, out = calls[-1]
    if not name:
        raise BenchError(f"model {what} is a single layer; the binarization test needs features before its last layer")
    if not (isinstance(out, torch.Tensor) and out.flatten(1).shape == logits.shape
            and torch.equal(out.flatten(1), logits)):
        raise BenchError(f"model {what}: its logits are not the output of its last layer ({name or what}); the "
                         "binarization test replaces a last linear layer")
    linear = isinstance(module, nn.Linear) or (
        isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1) and inp.shape[-2:] == (1, 1))
    if not linear:
        raise BenchError(f"model {what}: its last layer {name} is {type(module).__name__}, not linear; the "
                         "binarization test replaces a last linear layer with a two-class readout")
    return name, module


def binarize(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, Readout]:
    """A copy of ``model`` whose last linear layer is a :class:`Readout` (set per test point)."""
    name, module = last_layer(model, x)
    twin = copy.deepcopy(model)
    dim = module.in_features if isinstance(module, nn.Linear) else module.in_channels
    readout = Readout(dim, conv=isinstance(module, nn.Conv2d)).to(x.device)
    parent_name, _, leaf = name.rpartition(".")
    parent = twin.get_submodule(parent_name) if parent_name else twin
    setattr(parent, leaf, readout)
    return twin.eval(), readout


# -- sampling in the ball --------------------------------------------------------------------------
def _clipped_l2_scale(x: torch.Tensor, d: torch.Tensor, eps: float) -> torch.Tensor | None:
    """Scale s per row so that ||clip(x + s d, 0, 1) - x||_2 = eps (Rauber and Bethge's clipping-aware
    rescaling, by bisection: the norm grows with s); None where no s reaches eps."""
    reach = torch.where(d > 0, 1 - x, torch.where(d < 0, x, torch.zeros_like(x))).flatten(1).norm(dim=1)
    if bool((reach < eps * (1 - 1e-4)).any()):
        return None
    lo = torch.zeros(len(d), 1)
    hi = torch.full((len(d), 1), 1.0)
    flat_x, flat_d = x.flatten(1).expand_as(d.flatten(1)), d.flatten(1)

    def norm(s: torch.Tensor) -> torch.Tensor:
        return ((flat_x + s * flat_d).clamp(0, 1) - flat_x).norm(dim=1, keepdim=True)

    while bool((norm(hi) < eps).any()):
        hi = torch.where(norm(hi) < eps, hi * 2, hi)
    for _ in range(50):
        mid = (lo + hi) / 2
        below = norm(mid) < eps
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return hi.view(-1, *[1] * (d.dim() - 1))


def sample_inner(x: torch.Tensor, n: int, norm: str, radius: float, gen: torch.Generator) -> torch.Tensor:
    """``n`` points uniformly in the ball of ``radius`` around x (one image), clipped to [0, 1]; clipping
    moves a point towards x, so it stays in the ball."""
    shape = (n, *x.shape)
    if norm == "Linf":
        delta = (torch.rand(shape, generator=gen) * 2 - 1) * radius
    else:
        delta = torch.randn(shape, generator=gen)
        delta = delta / delta.flatten(1).norm(dim=1).view(-1, *[1] * x.dim())
        r = torch.rand(n, generator=gen) ** (1.0 / x.numel())
        delta = delta * (radius * r).view(-1, *[1] * x.dim())
    return (x.cpu() + delta).clamp(0, 1)


def sample_boundary(x: torch.Tensor, n: int, norm: str, eps: float, gen: torch.Generator) -> torch.Tensor:
    """``n`` points on the surface of the eps ball around x that lie in [0, 1]. Linf: corners of the ball
    intersected with [0, 1] (a sign per pixel, then clipped: every corner of that box, at distance eps
    wherever some pixel can move by eps). L2: uniform directions, rescaled so that the clipped point is
    at distance eps."""
    xc = x.cpu()
    shape = (n, *x.shape)
    if norm == "Linf":
        sign = torch.randint(0, 2, shape, generator=gen).float() * 2 - 1
        out = (xc + sign * eps).clamp(0, 1)
        if bool((perturbation_norms(xc.expand_as(out), out, "Linf") < eps - TOLERANCE).any()):
            raise BenchError(f"eps {eps} is larger than every pixel's room to move in [0, 1]")
        return out
    d = torch.randn(shape, generator=gen)
    scale = _clipped_l2_scale(xc.unsqueeze(0), d, eps)
    if scale is None:
        raise BenchError(f"no point at L2 distance {eps} from a test image lies in [0, 1]; use a smaller eps")
    return (xc + scale * d).clamp(0, 1)


# -- the readout -----------------------------------------------------------------------------------
def fit_readout(z: torch.Tensor, labels: torch.Tensor, closeness: float,
                repeats: int = 1) -> tuple[torch.Tensor, float] | None:
    """An unregularised logistic regression separating ``labels`` exactly on features ``z`` (as the
    authors fit it, with scikit-learn), its boundary then moved ``closeness`` of the way towards the
    most confident boundary point and its logits rescaled to a range of 1 ("fixed" rescaling, so a
    cross-entropy attack is not starved by saturated logits); None when it does not separate them.
    ``repeats`` > 1: rows are that many draws of the same points, one after the other (a random
    defense), and a point's confidence is that of its least confident draw, so the point stays class
    1 under every draw the readout was fitted on."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    zn = z.double().numpy()
    y = labels.numpy()
    mu, sd = zn.mean(0), zn.std(0)
    sd[sd < 1e-12] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        lr = LogisticRegression(C=np.inf, max_iter=2000).fit((zn - mu) / sd, y)
    w = lr.coef_[0] / sd
    b = float(lr.intercept_[0] - (lr.coef_[0] * mu / sd).sum())
    s = zn @ w + b
    if not (np.all(s[y == 1] > 0) and np.all(s[y == 0] < 0)):
        return None
    per_point = s.reshape(repeats, -1).min(0)  # every draw of a point
    b -= closeness * float(per_point[y.reshape(repeats, -1)[0] == 1].max())
    s = zn @ w + b
    if not (np.any(s[y == 1] > 0) and np.all(s[y == 0] < 0)):
        return None
    scale = float(s.max() - s.min()) or 1.0
    return torch.from_numpy(w / scale).float(), b / scale


# -- one configuration -----------------------------------------------------------------------------
def refusal(runtime_defense: str, threat: str, attack_norm: str, minimal: bool, eps: float | None) -> str:
    """Why the test does not apply to this configuration ('' when it does)."""
    cls = defenses.DEFENSES.get(runtime_defense)
    if isinstance(cls, type) and issubclass(cls, StatefulDefense):
        return (f"{runtime_defense} fine-tunes the network, its last layer included, on every test point's "
                "neighbours with their 10-class labels, so no fixed two-class readout survives its predictions")
    if isinstance(cls, type) and issubclass(cls, NeighbourScorer):
        return (f"{runtime_defense} predicts by a nearest-neighbour vote over training-set features, never "
                "through the model's last layer, so there is no readout to replace")
    if threat == "transfer":
        return "a transfer attack crafts on a surrogate model, whose readout the test cannot replace"
    if attack_norm not in ("Linf", "L2"):
        return f"the attack's norm is {attack_norm}; the test builds Linf or L2 balls"
    if minimal and eps is None:
        return "a minimal-norm attack has no eps: give the ball with --eps"
    return ""


def run_cell(store: ArtifactStore, cell: Cell, settings: Settings, attack_overrides: dict[str, Any] | None = None,
             progress: Any = None) -> Outcome:
    """The binarization test of one grid cell (model, runtime defense, attack as the grid configures
    them; ``attack_overrides`` change attack parameters, e.g. a deliberately weak attack)."""
    start = time.perf_counter()
    fix_threads()  # one thread, as a grid cell runs (tiny batches are slower on several)
    factory = ATTACKS.get(cell.attack)
    params = resolve_params(factory, store.family, {**cell.attack_params, **(attack_overrides or {})},
                            seed=cell.seed)
    if cell.eps is not None:
        params["eps"] = cell.eps
    attack = create_attack(cell.attack, **params)
    eps = settings.eps if attack.minimal_norm else attack.eps  # a ball attack is tested at its own eps
    defense_name = cell.train_defense if cell.runtime_defense == "none" else cell.runtime_defense
    label = cell.attack_label if cell.attack_label == cell.attack else f"{cell.attack_label} ({cell.attack})"
    out = Outcome(defense=defense_name, attack=label, threat=cell.threat, norm=attack.norm, eps=eps)
    out.refused = refusal(cell.runtime_defense, cell.threat, attack.norm, attack.minimal_norm, eps)
    if out.refused:
        return out
    store.setup_data()
    model, model_key = store.model(cell.arch, cell.train_defense, cell.train_params, cell.seed)
    x_all = store.test.x[: settings.n].to(store.device)
    twin, readout = binarize(model, x_all)
    defense = store.runtime(cell, twin, f"{model_key}:binarized:{id(twin)}")  # prepared on this twin
    check_points(out, attack, defense, twin, readout, x_all, settings, cell.threat, cell.seed, progress)
    out.seconds = round(time.perf_counter() - start, 3)
    return out


def check_points(out: Outcome, attack: Any, defense: Any, twin: nn.Module, readout: Readout, x_all: torch.Tensor,
                settings: Settings, threat: str = "base", stream_seed: int = 0, progress: Any = None) -> Outcome:
    """The test on each point of ``x_all``, counted into ``out``: ``defense`` is prepared on ``twin``
    (the model whose last layer is ``readout``); the attack runs as a grid cell of ``threat`` runs it."""
    eps = out.eps
    randomized = bool(getattr(defense, "randomized", False))
    repeats = settings.repeats or (RANDOM_REPEATS if randomized else 1)
    gen = torch.Generator().manual_seed(settings.seed)
    zero = torch.zeros(1, dtype=torch.long, device=x_all.device)
    random_hits = random_total = 0
    for i in range(len(x_all)):
        x = x_all[i]
        inner = torch.cat([x.cpu()[None], sample_inner(x, settings.inner - 1, attack.norm, ETA * eps, gen)])
        bound = sample_boundary(x, settings.boundary, attack.norm, eps, gen)
        points = torch.cat([inner, bound]).to(x_all.device)
        labels = torch.cat([torch.zeros(len(inner)), torch.ones(len(bound))]).long()
        z = features(defense, readout, points, repeats)
        fit = fit_readout(z, labels.repeat(repeats), settings.closeness, repeats)
        if fit is None:
            _discard(out, "no linear readout separates them exactly")
            continue
        readout.set(*fit)
        # the guarantee, checked through the defended pipeline: x is class 0, a boundary point class 1
        check = predict(defense, torch.cat([x[None], bound.to(x_all.device)]))
        if check[0] != 0 or not bool((check[1:] == 1).any()):
            _discard(out, "the defense's randomness flips the readout on x or the boundary points")
            continue
        x_adv = craft(attack, threat, stream_seed, defense, twin, x[None], zero)
        in_ball = bool(perturbation_norms(x[None], x_adv, attack.norm)[0]
                       <= eps + TOLERANCE * (1 if attack.norm == "Linf" else max(1.0, eps)))
        in_box = float(x_adv.min()) >= -TOLERANCE and float(x_adv.max()) <= 1 + TOLERANCE
        hit = bool(predict(defense, x_adv)[0] == 1) and in_ball and in_box
        rand_pred = predict(defense, sample_inner(x, settings.random, attack.norm, eps, gen).to(x_all.device))
        out.tested += 1
        out.successes += int(hit)
        random_hits += int(bool((rand_pred == 1).any()))
        random_total += int((rand_pred == 1).sum())
        if progress is not None:
            progress(i + 1, len(x_all))
    out.random_hits += random_hits
    out.random_points = round(random_total / max(1, out.tested * settings.random), 6)
    return out


def _discard(out: Outcome, why: str) -> None:
    out.discarded += 1
    out.discard_reasons[why] = out.discard_reasons.get(why, 0) + 1


def features(defense: Any, readout: Readout, points: torch.Tensor, repeats: int) -> torch.Tensor:
    """Penultimate features of ``points`` as the defended pipeline computes them (after a purifier's
    transform), ``repeats`` draws each for a random defense, in the order of ``points.repeat``."""
    defense.reset()
    readout.capture = []
    try:
        for _ in range(repeats):
            defense.logits(points)
        z = torch.cat(readout.capture) if readout.capture else torch.empty(0)
    finally:
        readout.capture = None
    if len(z) != repeats * len(points):
        name = getattr(defense, "registry_name", type(defense).__name__)
        raise BenchError(f"runtime defense {name} does not pass each input once through the model's last layer "
                         f"({len(z)} feature rows for {repeats * len(points)} inputs), so the test cannot apply")
    return z


def predict(defense: Any, x: torch.Tensor) -> torch.Tensor:
    """The defended pipeline's classes, from its reset state, as the grid scores a cell."""
    defense.reset()
    return defense.logits(x).argmax(1).cpu()


def craft(attack: Any, threat: str, stream_seed: int, defense: Any, twin: nn.Module, x: torch.Tensor,
          y: torch.Tensor) -> torch.Tensor:
    """The attack's point, crafted as bench.run.evaluation crafts a cell's (base threat: against the
    network; adaptive: against the defense's attack surface, bound when the attack needs the defense)."""
    if threat == "adaptive":
        defense.reset()
        if attack.needs_defense:
            attack.bind(defense, stream_seed=stream_seed)
        target = defense.attack_model()
    else:
        target = twin
    return attack.run(target, x, y).x_adv.detach()



def select_cells(spec: Any, defense: str, attack: str, threat: str | None = None,
                 eps: float | None = None) -> list[Cell]:
    """The grid's cells for ``defense`` (a train-time defense, met with no runtime defense, or a runtime
    defense on the grid's base model) and ``attack`` (its registered name or its label), narrowed by
    ``threat`` and a ball attack's ``eps``; one clear line when none match."""
    cells = spec.cells(limit=None)
    if defense in spec.runtime and defense != "none":
        mine = [c for c in cells if c.runtime_defense == defense]
    elif defense in spec.train:
        mine = [c for c in cells if c.train_defense == defense and c.runtime_defense == "none"]
    else:
        names = sorted({*spec.train, *spec.runtime} - {"none"})
        raise BenchError(f"grid {spec.name} has no defense {defense!r}; use one of {', '.join(names)}")
    mine = [c for c in mine if attack in (c.attack, c.attack_label)]
    if not mine:
        raise BenchError(f"grid {spec.name} runs no attack {attack!r} against {defense}; `bench run --grid "
                         f"{spec.name} --dry-run` lists its cells")
    if threat is not None:
        mine = [c for c in mine if c.threat == threat]
        if not mine:
            raise BenchError(f"grid {spec.name} has no {threat} {attack} cell against {defense}")
    if eps is not None and any(c.eps is not None for c in mine):
        mine = [c for c in mine if c.eps is not None and abs(c.eps - eps) < 1e-12]
        if not mine:
            raise BenchError(f"grid {spec.name} runs {attack} against {defense} at no eps {eps}")
    return mine


def render(outcomes: list[Outcome]) -> str:
    """The result table: one row per configuration, refusals and discard reasons under it."""
    head = ["defense", "attack", "threat", "ball", "n", "success", "95% CI", "random", "discarded", "result"]
    rows = []
    for o in outcomes:
        ball = f"{o.norm} {o.eps:g}" if o.eps is not None else o.norm
        if o.refused:
            rows.append([o.defense, o.attack, o.threat, ball, "-", "-", "-", "-", "-", "n/a"])
            continue
        ci = o.ci
        rows.append([o.defense, o.attack, o.threat, ball, str(o.tested),
                     f"{o.rate:.0%}" if o.rate is not None else "-",
                     f"[{ci[0]:.0%}, {ci[1]:.0%}]" if ci else "-",
                     f"{o.random_rate:.0%}" if o.random_rate is not None else "-", str(o.discarded),
                     "pass" if o.passed else "FAIL"])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in [head, *rows]]
    for o in outcomes:
        if o.refused:
            lines.append(f"n/a: {o.defense} x {o.attack} ({o.threat}): {o.refused}")
        for why, count in o.discard_reasons.items():
            lines.append(f"discarded: {o.defense} x {o.attack}: {count} point(s), {why}")
    lines.append(f"pass: success >= {PASS_RATE:.0%} (Zimmermann et al., NeurIPS 2022); random: test points where "
                 "one of the uniform draws in the ball is already adversarial")
    return "\n".join(lines)


__all__ = ["PASS_RATE", "Outcome", "Readout", "Settings", "binarize", "fit_readout", "last_layer", "render",
           "run_cell", "sample_boundary", "check_points", "sample_inner", "select_cells"]
