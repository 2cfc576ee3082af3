"""The attack contract: configure once, call on (model, x, y) -> x_adv.

``model`` maps float images in [0, 1] (NCHW) to logits: a bare network or a defended pipeline.
Every attack returns x_adv with x's shape, inside [0, 1], and (for ball attacks) inside its eps ball
around x. One batching path (``batch_size``), one device policy (x's device; the model must live
there), one seeded random stream per call (``seed``), one target policy for targeted mode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from bench.core.errors import BenchError

Model = Callable[[torch.Tensor], torch.Tensor]
NORMS = ("Linf", "L2", "L0")


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
    #: Per dataset family ("digits", "mnist", "cifar10") parameter defaults from the seed papers.
    dataset_defaults: ClassVar[dict[str, dict[str, Any]]] = {}
    #: Defense-aware attacks need the runtime defense object (set by the runner via ``bind``).
    needs_defense: ClassVar[bool] = False

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
        self.last_target: torch.Tensor | None = None
        self.defense: Any = None

    def bind(self, defense: Any) -> Attack:
        """Give a defense-aware attack (``needs_defense``) the prepared runtime defense it attacks."""
        self.defense = defense
        return self

    # -- public --------------------------------------------------------------------------------
    def __call__(self, model: Model, x: torch.Tensor, y: torch.Tensor,
                 target: torch.Tensor | None = None) -> torch.Tensor:
        """Return adversarial examples for (x, y); ``target`` overrides the seeded target choice."""
        if x.dim() != 4:
            raise BenchError(f"attacks take NCHW image batches, got shape {tuple(x.shape)}")
        if not self.minimal_norm and self.eps is None:
            raise BenchError(f"{type(self).__name__} needs eps")
        gen = torch.Generator().manual_seed(self.seed)
        if self.targeted and target is None:
            with torch.no_grad():
                num_classes = model(x[:1]).shape[1]
            target = random_wrong_class(y, num_classes, gen)
        self.last_target = target
        out = []
        for start in range(0, len(x), self.batch_size):
            sl = slice(start, start + self.batch_size)
            tb = None if target is None else target[sl].to(x.device)
            adv = self.perturb(model, x[sl], y[sl].to(x.device), tb, gen)
            out.append(adv.detach())
        return torch.cat(out) if out else x.clone()

    def perturb(self, model: Model, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                gen: torch.Generator) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """Parameters that determine the output (for hashing and MLflow params)."""
        scalar = (int, float, str, bool, type(None))
        return {k: v for k, v in vars(self).items()
                if not k.startswith("_") and k not in ("last_target", "defense") and isinstance(v, scalar)}

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
