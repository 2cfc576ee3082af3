"""The attack contract: configure once, call on (model, x, y) -> x_adv; ``run`` returns an AttackResult.

``model`` maps float images in [0, 1] (NCHW) to logits: a bare network or a defended pipeline.
Every attack returns x_adv with x's shape, inside [0, 1], and (for ball attacks) inside its eps ball
around x. One batching path (``batch_size``), one device policy (x's device; the model must live
there), one seeded random stream per call (``seed``), one target policy for targeted mode.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from bench.core import progress
from bench.core.errors import BenchError

Model = Callable[[torch.Tensor], torch.Tensor]
NORMS = ("Linf", "L2", "L0")


def budget_limit(norm: str, shape: Sequence[int]) -> float:
    """The largest perturbation an image of ``shape`` with values in [0, 1] admits in ``norm``: 1 in
    Linf, sqrt(values) in L2, the number of values in L1 and L0 (what the audit counts)."""
    n = math.prod(shape)
    return 1.0 if norm == "Linf" else math.sqrt(n) if norm == "L2" else float(n)


@dataclass
class StreamOutcome:
    """The defender's predictions on an attack's x_adv, when the attack already ran the stream the
    harness scores (a fresh stream from the defense's reset state in ``stream_order(n, seed)``), so
    the harness need not replay it (RMC paper, Section 5.2: PGD-Skip, FPA, GMSA)."""

    seed: int  #: the stream-order seed the attack simulated
    pred: torch.Tensor  #: (n,) predicted labels, index order
    delays: list[float] = field(default_factory=list)  #: seconds per stream point, stream order
    stats: list[dict[str, Any]] = field(default_factory=list)  #: the defense's per-point statistics


@dataclass
class AttackResult:
    """What one attack run hands the harness: the examples plus what the attack learned on the way.

    Only ``x_adv`` is always there; an attack fills the other fields where it has them, and the
    harness reads nothing else from an attack."""

    x_adv: torch.Tensor
    #: (n,) the target class per example of a targeted run (seeded random wrong class unless given)
    target: torch.Tensor | None = None
    #: (n,) bool: which points a stream attack with ``attack_rate`` < 1 attacked (the rest reach the
    #: defender clean; the harness scores the attacked ones)
    attacked: torch.Tensor | None = None
    #: the defender's predictions on the scored stream, where the attack already ran it
    stream: StreamOutcome | None = None
    #: (steps, n) the attack's loss at each step, where the attack records it
    loss_trace: torch.Tensor | None = None
    #: (n,) the first step at which each example was adversarial, -1 if never
    first_success: torch.Tensor | None = None

    def stream_for(self, n: int, seed: int) -> StreamOutcome | None:
        """The stream outcome if it is the one the harness would score (n points, order seed)."""
        s = self.stream
        return s if s is not None and s.seed == int(seed) and len(s.pred) == int(n) else None


@dataclass
class Traced:
    """What ``perturb`` may return for one batch instead of a bare tensor: the examples plus the
    optimisation's trace (Pintor et al., "Indicators of attack failure", NeurIPS 2022, read these).

    ``loss_trace[t, i]`` is example i's attack loss at step t, *lower is closer to adversarial*
    (untargeted: -CE(f(x), y) or a negative margin; targeted: CE(f(x), target)), measured on the
    iterate the step's gradient was taken at. ``first_success[i]`` is the first step whose iterate
    was adversarial, -1 if none was. ``x_adv`` must be the best adversarial point found along the
    path (the first or smallest one), never a later non-adversarial iterate, except for an attack
    crafting with ``Attack.full_budget`` (transfer, randomized defenses): then the final iterate."""

    x_adv: torch.Tensor
    loss_trace: torch.Tensor | None = None  #: (steps, b)
    first_success: torch.Tensor | None = None  #: (b,) long


def _cat_traces(parts: list[torch.Tensor | None]) -> torch.Tensor | None:
    """Per-batch (steps, b) traces side by side; shorter ones (early stops) padded with their last row."""
    if not parts or any(p is None for p in parts):
        return None
    steps = max(p.shape[0] for p in parts)
    padded = [torch.cat([p, p[-1:].expand(steps - p.shape[0], -1)]) if p.shape[0] < steps else p for p in parts]
    return torch.cat([p.detach().float().cpu() for p in padded], dim=1)


class Attack:
    """Base class. Subclasses implement ``perturb(model, x, y, target, gen)`` on one batch.

    Shared parameters: ``eps``, ``norm``, ``steps``, ``step_size``, ``random_start``, ``targeted``,
    ``seed`` (and ``batch_size``). Targeted mode picks, for each example, a uniformly random wrong
    class from a generator seeded with ``seed`` (RMC paper: CW-L2 and JSMA are targeted), unless
    the caller passes ``target``.
    """

    #: "Linf" / "L2" / "L0": the norm of the ball (or of the reported size for minimal-norm attacks).
    norm: str = "Linf"
    #: Minimal-norm attacks (DeepFool, CW-L2, JSMA) have no eps ball: the audit records their norm.
    minimal_norm: ClassVar[bool] = False
    #: A minimal-norm attack whose search a budget of its own caps (JSMA's gamma): it is not unbounded
    #: as it stands, so the unconstrained-failure indicator reruns it through ``unbounded``.
    capped: ClassVar[bool] = False
    #: Run every step and return the final iterate, not the first adversarial one; set on a copy by
    #: ``full_budget`` (an instance attribute, so it is in ``config`` and the examples' cache key).
    keep_last: bool = False
    #: Per dataset family ("digits", "mnist", "cifar10") parameter defaults from the seed papers.
    dataset_defaults: ClassVar[dict[str, dict[str, Any]]] = {}
    #: Defense-aware attacks need the runtime defense object (set by the runner via ``bind``).
    needs_defense: ClassVar[bool] = False
    #: Runtime defenses a defense-aware attack applies to: registered names, or contract classes
    #: (``StatefulDefense``, ``Purifier``, ``NeighbourScorer``) meaning any defense implementing them.
    applies_to: ClassVar[tuple[str | type, ...]] = ()
    #: Least value of a count parameter, ``name: (least, why)``, checked when a grid loads
    #: (bench.spec.validate), so a bad value is one line then rather than a failed cell later.
    minimums: ClassVar[dict[str, tuple[int, str]]] = {"steps": (1, ""), "batch_size": (1, "")}

    def __init__(
        self,
        eps: float | None = None,
        norm: str | None = None,
        steps: int = 10,
        step_size: float | None = None,
        random_start: bool = False,
        targeted: bool = False,
        seed: int = 0,
        batch_size: int = 256,
    ) -> None:
        if norm is not None:
            if norm not in NORMS:
                raise BenchError(f"unknown norm {norm!r}; use one of {', '.join(NORMS)}")
            self.norm = norm
        if eps is not None and not (0.0 <= float(eps) <= 1.0) and self.norm == "Linf":
            raise BenchError(f"eps must lie in [0, 1] for images in [0, 1], got {eps}")
        if eps is not None and not math.isfinite(float(eps)):
            raise BenchError(f"eps must be a finite number, got {eps}")
        if eps is not None and float(eps) < 0:
            raise BenchError(f"eps must be non-negative, got {eps}")
        if int(steps) < 1:
            raise BenchError(f"steps must be at least 1, got {steps}")
        if step_size is not None and float(step_size) <= 0:
            raise BenchError(f"step_size must be positive, got {step_size}")
        if int(batch_size) < 1:
            raise BenchError(f"batch_size must be at least 1, got {batch_size}")
        self.eps = None if eps is None else float(eps)
        self.steps = int(steps)
        self.step_size = None if step_size is None else float(step_size)
        self.random_start = bool(random_start)
        self.targeted = bool(targeted)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.defense: Any = None

    def bind(self, defense: Any, *, stream_seed: int | None = None) -> Attack:
        """Give a defense-aware attack (``needs_defense``) the prepared runtime defense it attacks;
        ``stream_seed`` is the seed of the harness's evaluation stream (``stream_order``), which
        stream-aware attacks replay."""
        self.defense = defense
        return self

    def eot_draws(self, defense: Any) -> int:
        """Draws per gradient this attack averages over against ``defense`` (EOT); 0: none."""
        return 0

    def unbounded(self, shape: Sequence[int]) -> Attack:
        """A copy of this attack with an unbounded budget for inputs of ``shape`` (Pintor et al.,
        NeurIPS 2022, unconstrained-attack check): eps grown to the whole [0, 1] box, an eps-scaled
        step grown with it, a wrapped ``inner`` attack unbounded too. Attacks budgeted by something
        other than eps (JSMA's gamma) override this."""
        free = copy.copy(self)
        if free.eps:
            grow = budget_limit(free.norm, shape) / free.eps
            free.eps *= grow
            if free.step_size is not None:  # an eps-scaled step (PGD's 2.5 eps / steps) keeps its meaning
                free.step_size *= grow
        inner = getattr(free, "inner", None)
        if isinstance(inner, Attack):
            free.inner = inner.unbounded(shape)  # type: ignore[attr-defined]
        return free

    def full_budget(self) -> Attack:
        """A copy that runs every step and returns the final iterate instead of each example's first
        adversarial one, for an attack judged on something other than what it ran on.

        The first adversarial iterate is never weaker on the model the attack ran on; judged elsewhere
        it is, because it lies just across that model's boundary. Transfer cells (a surrogate's
        examples judged on the target: digits, LeNet-5 to small-cnn, PGD eps 0.2 left 86.5% of the
        target's answers standing from the first iterates, 35.5% from the final ones) and adaptive
        cells on a randomized defense (the attack's draw of the randomness is not the evaluation's)
        craft this way, as transfer and EOT evaluations do (Madry et al., ICLR 2018; Athalye et al.,
        ICML 2018). Minimal-norm attacks are returned unchanged: their smallest adversarial point is
        what they measure; so is an attack that runs its full budget already. A wrapper (bpda, eot)
        passes it to the attack it runs."""
        if self.minimal_norm or self.keep_last:
            return self
        free = copy.copy(self)
        free.keep_last = True
        inner = getattr(free, "inner", None)
        if isinstance(inner, Attack):
            free.inner = inner.full_budget()  # type: ignore[attr-defined]
        return free

    def note_success(self, t: int, success: torch.Tensor, x_adv: torch.Tensor, found: torch.Tensor,
                     done: torch.Tensor, first: torch.Tensor) -> bool:
        """Step ``t``'s successes: ``first[i] = t`` where example i is adversarial for the first time and,
        unless ``keep_last``, that iterate becomes what it returns (``found``, ``done``, in place).
        True when every example is done, so the loop can stop."""
        new = success & (first < 0)
        first[new] = t
        if self.keep_last:
            return False
        found[new] = x_adv[new]
        done |= new
        return bool(done.all())

    # -- public --------------------------------------------------------------------------------
    def __call__(self, model: Model, x: torch.Tensor, y: torch.Tensor,
                 target: torch.Tensor | None = None) -> torch.Tensor:
        """Adversarial examples for (x, y); ``target`` overrides the seeded target choice."""
        return self.run(model, x, y, target).x_adv

    def run(self, model: Model, x: torch.Tensor, y: torch.Tensor,
            target: torch.Tensor | None = None) -> AttackResult:
        """The :class:`AttackResult` for (x, y): what the harness calls."""
        if x.dim() != 4:
            raise BenchError(f"attacks take NCHW image batches, got shape {tuple(x.shape)}")
        if not self.minimal_norm and self.eps is None:
            raise BenchError(f"{type(self).__name__} needs eps")
        gen = torch.Generator().manual_seed(self.seed)
        if self.targeted and target is None:
            with torch.no_grad():
                num_classes = model(x[:1]).shape[1]
            target = random_wrong_class(y, num_classes, gen)
        out, traces, firsts = [], [], []
        with progress.task(f"craft {getattr(self, 'registry_name', type(self).__name__)}", len(x)) as bar:
            for start in range(0, len(x), self.batch_size):
                sl = slice(start, start + self.batch_size)
                tb = None if target is None else target[sl].to(x.device)
                adv = self.perturb(model, x[sl], y[sl].to(x.device), tb, gen)
                if isinstance(adv, Traced):
                    traces.append(adv.loss_trace)
                    firsts.append(None if adv.first_success is None else adv.first_success.detach().long().cpu())
                    adv = adv.x_adv
                else:
                    traces.append(None)
                    firsts.append(None)
                out.append(adv.detach())
                bar.update(len(adv))
        if not out:
            return AttackResult(x.clone(), target=target)
        first = None if any(f is None for f in firsts) else torch.cat(firsts)
        return AttackResult(torch.cat(out), target=target, loss_trace=_cat_traces(traces), first_success=first)

    def perturb(self, model: Model, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                gen: torch.Generator) -> torch.Tensor | Traced:  # pragma: no cover - abstract
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """Parameters that determine the output (for hashing and MLflow params)."""
        scalar = (int, float, str, bool, type(None))
        return {k: v for k, v in vars(self).items()
                if not k.startswith("_") and k != "defense" and isinstance(v, scalar)}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    # -- helpers shared by gradient attacks ---------------------------------------------------
    def loss_grad(self, model: Model, x_adv: torch.Tensor, y: torch.Tensor,
                  target: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradient of the attacker's objective (ascent direction) and the logits it saw.

        Untargeted: ascend CE(f(x), y). Targeted: descend CE(f(x), target).
        """
        x_adv = x_adv.detach().requires_grad_(True)
        logits = model(x_adv)
        if target is None:
            loss = F.cross_entropy(logits, y, reduction="sum")
        else:
            loss = -F.cross_entropy(logits, target, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
        return grad, logits.detach()

    def attack_loss(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """Per-example loss the trace records, lower is closer to adversarial: -CE(f(x), y)
        untargeted, CE(f(x), target) targeted (the objective ``loss_grad`` follows)."""
        if target is None:
            return -F.cross_entropy(logits.detach(), y, reduction="none")
        return F.cross_entropy(logits.detach(), target, reduction="none")

    def is_success(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        pred = logits.argmax(1)
        return pred != y if target is None else pred == target


def random_wrong_class(y: torch.Tensor, num_classes: int, gen: torch.Generator) -> torch.Tensor:
    """A uniformly random class different from y, per example (seeded)."""
    offset = torch.randint(1, num_classes, (len(y),), generator=gen)
    return (y.cpu() + offset) % num_classes


def project_linf(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Project onto the Linf ball of radius eps around x, intersected with [0, 1]."""
    return torch.max(torch.min(x_adv, x + eps), x - eps).clamp_(0.0, 1.0)


def project_l2(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Project onto the L2 ball of radius eps around x, then clip to [0, 1].

    Clipping after the radial projection can only shrink the perturbation, so the result stays in
    the ball.
    """
    delta = x_adv - x
    norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
    delta = delta * torch.clamp(eps / norms, max=1.0)
    return (x + delta).clamp_(0.0, 1.0)


def uniform_like(x: torch.Tensor, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    """Seeded uniform noise drawn on the CPU (same stream on every device)."""
    return (torch.rand(x.shape, generator=gen) * (high - low) + low).to(x.device, x.dtype)
