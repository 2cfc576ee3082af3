"""Stream-aware attacks on stateful runtime defenses (RMC, RMC+): PGD-Skip and its weakened forms.

RMC adapts its weights to every test point it sees (Wu, Yuan, Wu, ICML 2020). PGD-Skip (Section
5.2; supplement C.2) assumes the attacker knows the whole test stream: it crafts the point at
stream position p + 1 with PGD against the weights adapted to positions 1..p, bypassing every RMC
effect of earlier points. PGD-Skip-Delayed can only attack weights q positions old; PGD-Skip-Partial
knows only a fraction of the earlier points, out of order (supplement Table 3; main Table 5 for
RMC+).

All of them simulate the defender: snapshot the bound defense, reset it, walk the stream in the
runner's order (``bench.core.stream.stream_order``), craft each attack point against the weights the
attacker knows, feed the point the defender will really see (x_adv at attack points, x at clean
ones, ``attack_rate``) through ``defense.predict`` to advance the simulated state, and finally
restore the snapshot. RMC is deterministic given its seeded generator, so the runner's later
evaluation replays exactly the simulated stream: at each attack point the defender holds the
weights PGD-Skip attacked. The result's ``attacked`` marks the attack points (the runner reports
robust accuracy over those).

One pass: where the simulated stream IS the scored stream (PGD-Skip and PGD-Skip-Delayed feed each
final x_adv to the defender, from its reset state, in the runner's order; FPA / GMSA evaluate the
stream of the round they return), the attack keeps the defender's predictions and per-point delays
(the result's ``stream``, a StreamOutcome), and the runner scores those instead of replaying the stream.
PGD-Skip-Partial swaps the attacker's copy in and out of the defense, so it keeps the replay.
"""

from __future__ import annotations

import copy
from collections import deque
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from attacks.pgd import PGD
from bench.core.contracts import Attack, AttackResult, Model, StatefulDefense, StreamOutcome
from bench.core.errors import BenchError
from bench.core.methods import register_attack as register
from bench.core.stream import attack_mask, stream_order


class StreamPGD(PGD):
    """Our PGD, configured for stream attacks.

    ``stop_early=False`` (the default here) returns the last iterate instead of the first one that
    fools the attacked weights: the defender adapts to the point's neighbourhood before predicting,
    and a barely-adversarial point is the one that adaptation undoes most easily. ``ensemble`` (a list
    of networks) replaces the loss by the mean (``reduce="mean"``, GMSA-AVG) or minimum
    (``reduce="min"``, GMSA-MIN) over the networks of the per-example cross-entropy.
    """

    def __init__(self, stop_early: bool = False, **kw: Any) -> None:
        super().__init__(**kw)
        self.stop_early = bool(stop_early)
        self.ensemble: list[nn.Module] | None = None
        self.reduce = "mean"

    def is_success(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        if self.stop_early and self.ensemble is None:
            return super().is_success(logits, y, target)
        return torch.zeros(len(y), dtype=torch.bool, device=logits.device)

    def loss_grad(self, model: Model, x_adv: torch.Tensor, y: torch.Tensor,
                  target: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.ensemble is None:
            return super().loss_grad(model, x_adv, y, target)
        x_adv = x_adv.detach().requires_grad_(True)
        logits = [net(x_adv) for net in self.ensemble]
        losses = torch.stack([F.cross_entropy(lg, y, reduction="none") for lg in logits])
        per_example = losses.mean(0) if self.reduce == "mean" else losses.min(0).values
        (grad,) = torch.autograd.grad(per_example.sum(), x_adv)
        return grad, logits[-1].detach()


def frozen_copy(net: nn.Module) -> nn.Module:
    """An eval-mode copy of ``net`` without parameter gradients: the attacker's view of some weights."""
    out = copy.deepcopy(net).eval()
    for p in out.parameters():
        p.requires_grad_(False)
    return out




def state_copy(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


class StreamAttack(Attack):
    """Base of the stream-aware attacks: configuration, the defender simulation, attack points.

    ``attack_rate`` r < 1 interleaves attack points with clean ones: a seeded subset of
    round(r * n) points is attacked, the rest reach the defender unchanged (x_adv = x there).
    ``stream_seed`` is the seed of the runner's stream order (the runner sets it to the cell's
    seed; default: ``seed``).
    """

    needs_defense = True
    applies_to: ClassVar[tuple[str | type, ...]] = (StatefulDefense,)  # rmc, rmc-plus and stateful plugins
    dataset_defaults: ClassVar[dict[str, dict[str, Any]]] = PGD.dataset_defaults

    def __init__(self, eps: float = 0.3, steps: int = 10, step_size: float | None = None,
                 random_start: bool = True, stop_early: bool = False, attack_rate: float = 1.0,
                 stream_seed: int | None = None, **kw: Any) -> None:
        super().__init__(eps=eps, steps=steps, step_size=step_size, random_start=random_start, **kw)
        if self.targeted:
            raise BenchError(f"{type(self).__name__} is untargeted")
        attack_mask(1, attack_rate, 0)  # validates the rate
        self.attack_rate = float(attack_rate)
        self.stream_seed = None if stream_seed is None else int(stream_seed)
        self.stop_early = bool(stop_early)
        self.pgd = StreamPGD(stop_early=stop_early, eps=self.eps, steps=self.steps, step_size=step_size,
                             random_start=self.random_start, seed=self.seed)
        self.step_size = self.pgd.step_size
        self._stream: StreamOutcome | None = None

    def bind(self, defense: Any, *, stream_seed: int | None = None) -> StreamAttack:
        super().bind(defense)
        if stream_seed is not None:  # the runner's stream order, which the simulation replays
            self.stream_seed = int(stream_seed)
        return self

    def _keep_stream(self, pred: torch.Tensor, delays: list[float], stats: list[dict[str, Any]] | None = None) -> None:
        """The simulated stream is the scored one: keep the defender's predictions (index order), its
        per-point delays and statistics (stream order) for the result."""
        self._stream = StreamOutcome(self._order_seed, pred, list(delays), list(stats or []))

    def _defense(self) -> StatefulDefense:
        d = self.defense
        if not isinstance(d, StatefulDefense):
            name = getattr(self, "registry_name", type(self).__name__)
            raise BenchError(f"{name} needs a bound stateful runtime defense (a defenses.StatefulDefense such as "
                             "rmc, rmc-plus): use threat = \"adaptive\" with one, or call attack.bind(defense)")
        return d

    def run(self, model: Model, x: torch.Tensor, y: torch.Tensor,
            target: torch.Tensor | None = None) -> AttackResult:
        """Simulate the defender's stream on (x, y); the defense's state is unchanged afterwards."""
        if x.dim() != 4:
            raise BenchError(f"attacks take NCHW image batches, got shape {tuple(x.shape)}")
        if target is not None:
            raise BenchError(f"{type(self).__name__} is untargeted")
        defense = self._defense()
        n = len(x)
        self._stream = None
        self._order_seed = self.seed if self.stream_seed is None else self.stream_seed
        order = stream_order(n, self._order_seed)
        attacked = attack_mask(n, self.attack_rate, self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        y = y.to(x.device)
        saved = defense.snapshot()
        try:
            defense.reset()
            x_adv = self.run_stream(model, defense, x, y, order, attacked, gen)
        finally:
            defense.restore(saved)
        return AttackResult(x_adv.detach(), attacked=attacked, stream=self._stream)

    def craft(self, net: Model, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """PGD (ours) against ``net``; every iterate is projected onto the eps ball and [0, 1]."""
        return self.pgd.perturb(net, x, y, None, gen).x_adv.detach()

    def run_stream(self, model: Model, defense: StatefulDefense, x: torch.Tensor, y: torch.Tensor,
                   order: torch.Tensor, attacked: torch.Tensor,
                   gen: torch.Generator) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


@register("pgd-skip-delayed")
class PGDSkipDelayed(StreamAttack):
    """PGD-Skip-Delayed (RMC supplement C.2, Table 3a): PGD-Skip against weights q points old.

    The point at stream position j is crafted against the weights the defender had before position
    j - q (the initial weights while j < q). q = 0 is PGD-Skip. Keeps a deque of q + 1 weight
    snapshots (q + 1 state dicts of memory).
    """

    # The Table 7 ablations: they predict before they learn from a point, so the weights before a
    # position are the ones that classify it (FPA / GMSA read weights after adaptation: not for these);
    # hindsight-adv learns from the true labels, which these attacks reveal.
    applies_to: ClassVar[tuple[str, ...]] = (*StreamAttack.applies_to, "rmc-nonmasking", "hindsight-adv")

    def __init__(self, q: int = 0, **kw: Any) -> None:
        super().__init__(**kw)
        if int(q) < 0:
            raise BenchError(f"q (the attacker's delay in stream positions) must be >= 0, got {q}")
        self.q = int(q)

    def run_stream(self, model: Model, defense: StatefulDefense, x: torch.Tensor, y: torch.Tensor,
                   order: torch.Tensor, attacked: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        net = frozen_copy(defense.adapted_model)
        history: deque[dict[str, torch.Tensor]] = deque(maxlen=self.q + 1)
        x_adv = x.clone()
        pred = torch.empty(len(x), dtype=torch.long)
        delays: list[float] = []
        stats: list[dict[str, Any]] = []
        for i in order.tolist():
            if self.q:  # q = 0 attacks the current weights: no history to keep
                history.append(state_copy(defense.adapted_model))  # the defender's weights before this position
            if attacked[i]:
                net.load_state_dict(history[0] if self.q else defense.adapted_model.state_dict())
                x_adv[i : i + 1] = self.craft(net, x[i : i + 1], y[i : i + 1], gen)
            # The defender sees the final x_adv[i] here, after every earlier point and before any
            # later one: exactly the runner's evaluation stream, so its prediction is kept.
            defense.reveal(y[i : i + 1])
            pred[i] = defense.logits(x_adv[i : i + 1]).argmax(1).cpu()[0]
            delays.extend(defense.last_delays)
            stats.extend(defense.last_stats)
        self._keep_stream(pred, delays, stats)
        return x_adv


@register("pgd-skip")
class PGDSkip(PGDSkipDelayed):
    """PGD-Skip (RMC, ICML 2020, Section 5.2): full knowledge of the stream, no delay."""

    def __init__(self, **kw: Any) -> None:
        if kw.pop("q", 0):
            raise BenchError("pgd-skip has no delay; use pgd-skip-delayed with q")
        super().__init__(q=0, **kw)


@register("pgd-skip-partial")
class PGDSkipPartial(StreamAttack):
    """PGD-Skip-Partial (RMC supplement C.2, Table 3b): the attacker knows part of the stream.

    The attacker knows a seeded random subset of round(known * n) stream positions and adapts its OWN
    simulated copy of the defense on the known earlier points only, then attacks that copy's weights.

    Out of order: known points reach the attacker in groups of ``chunk``, each group shuffled
    (seeded), so the copy also lags up to ``chunk`` - 1 known points. known = 1 is full knowledge
    of the stream and its order (the paper's 100% column is its PGD-Skip number): no shuffling then,
    and the attack equals PGD-Skip exactly.

    The copy is a second state (snapshot) of the one bound defense, swapped in with
    ``restore`` to adapt and swapped out again: no second copy of the database D' (RMC+'s snapshot
    does clone D', so each swap costs a D' copy there).
    """

    applies_to: ClassVar[tuple[str, ...]] = (*StreamAttack.applies_to, "rmc-nonmasking", "hindsight-adv")

    def __init__(self, known: float = 0.5, chunk: int = 10, **kw: Any) -> None:
        super().__init__(**kw)
        if not 0.0 < float(known) <= 1.0:
            raise BenchError(f"known (the fraction of the stream the attacker knows) must lie in (0, 1], got {known}")
        if int(chunk) < 1:
            raise BenchError(f"chunk must be at least 1, got {chunk}")
        self.known, self.chunk = float(known), int(chunk)

    def run_stream(self, model: Model, defense: StatefulDefense, x: torch.Tensor, y: torch.Tensor,
                   order: torch.Tensor, attacked: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n = len(x)
        kgen = torch.Generator().manual_seed(self.seed + 1)
        known_pos = torch.zeros(n, dtype=torch.bool)
        known_pos[torch.randperm(n, generator=kgen)[: round(self.known * n)]] = True
        chunk = 1 if self.known >= 1.0 else self.chunk
        net = frozen_copy(defense.adapted_model)
        # The attacker's copy starts where the defender starts (reset): its state (opaque) and weights.
        mine, mine_weights = defense.snapshot(), state_copy(defense.adapted_model)
        pending: list[int] = []
        x_adv = x.clone()
        for j, i in enumerate(order.tolist()):
            if attacked[i]:
                net.load_state_dict(mine_weights)
                x_adv[i : i + 1] = self.craft(net, x[i : i + 1], y[i : i + 1], gen)
            defense.reveal(y[i : i + 1])
            defense.logits(x_adv[i : i + 1])
            if known_pos[j]:
                pending.append(i)
            if len(pending) >= chunk:
                if chunk > 1:
                    pending = [pending[k] for k in torch.randperm(len(pending), generator=kgen).tolist()]
                theirs = defense.snapshot()
                defense.restore(mine)
                defense.reveal(y[pending])
                defense.logits(x_adv[pending])
                mine, mine_weights = defense.snapshot(), state_copy(defense.adapted_model)
                defense.restore(theirs)
                pending = []
        return x_adv
