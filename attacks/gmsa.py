"""FPA and GMSA against transductive / test-time-adapting defenses (Chen et al., "Towards
Evaluating the Robustness of Neural Networks Learned by Transduction", ICLR 2022), for RMC / RMC+.

Round 0: PGD against the fixed model. Each following round runs the defense's stream on the
current x_adv (from a reset state; the state is restored afterwards) and records, for every attack
point, the adapted weights it was predicted with; then crafts a new x_adv per point:

- ``fpa`` (fixed-point attack): PGD against that point's model from the latest round;
- ``gmsa-avg``: PGD on the mean cross-entropy over that point's models from every round so far;
- ``gmsa-min``: PGD on the minimum cross-entropy over them (all models must be fooled).

The attack returns the round whose stream accuracy on the attack points is lowest (as Chen et al.
return the best round): one stream is evaluated as a whole, so rounds are not mixed per example.
Memory: one state dict per attack point per round (digits small CNN: about 1.1 MB each).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from attacks.pgd_skip import StreamAttack, frozen_copy, state_copy
from bench.core.contracts import Model, StatefulDefense
from bench.core.errors import BenchError
from bench.core.methods import register_attack as register


def stream_with_weights(defense: StatefulDefense, x: torch.Tensor, order: torch.Tensor,
                        record: torch.Tensor) -> tuple[torch.Tensor, dict[int, dict[str, torch.Tensor]]]:
    """Run ``defense`` (from its current state) on x in ``order``: predicted labels (index order)
    and, for each index i with ``record[i]``, the weights that predicted it. The defense's
    per-point delays of this stream are left in its ``last_delays``.

    A prediction observer (``StatefulDefense.add_prediction_observer``) copies the weights each
    point was predicted with, for the duration of the stream.
    """
    weights: dict[int, dict[str, torch.Tensor]] = {}
    positions = iter(order.tolist())

    def observe(model: torch.nn.Module) -> None:
        i = next(positions)
        if record[i]:
            weights[i] = state_copy(model)

    with defense.add_prediction_observer(observe):
        logits = defense.logits(x[order])
    missing = [i for i in order.tolist() if record[i] and i not in weights]
    if missing:
        raise BenchError(f"{type(defense).__name__}.predict did not call notify_prediction() for every stream "
                         f"point ({len(missing)} of {int(record.sum())} recorded points missing)")
    pred = torch.empty(len(x), dtype=torch.long)
    pred[order] = logits.argmax(1).cpu()
    return pred, weights


class _RoundsAttack(StreamAttack):
    """Shared loop of FPA / GMSA; ``mode`` picks the models and the loss of each round."""

    mode: ClassVar[str] = "fpa"

    def __init__(self, rounds: int = 2, **kw: Any) -> None:
        super().__init__(**kw)
        if int(rounds) < 1:
            raise BenchError(f"rounds must be at least 1, got {rounds}")
        self.rounds = int(rounds)
        self.last_round_acc: list[float] = []

    def config(self) -> dict[str, Any]:
        return {k: v for k, v in super().config().items() if k != "last_round_acc"}

    def run_stream(self, model: Model, defense: StatefulDefense, x: torch.Tensor, y: torch.Tensor,
                   order: torch.Tensor, attacked: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        idx = attacked.nonzero().flatten().to(x.device)
        x_adv = x.clone()
        self.pgd.ensemble = None
        x_adv[idx] = self.craft(model, x[idx], y[idx], gen)  # round 0: the fixed model
        history: list[dict[int, dict[str, torch.Tensor]]] = []
        best, best_acc, accs = x_adv, float("inf"), []
        best_stream: tuple[torch.Tensor, list[float], list[dict[str, Any]]] | None = None
        nets = [frozen_copy(defense.adapted_model) for _ in range(self.rounds)]
        y_cpu = y.cpu()
        for r in range(self.rounds + 1):
            defense.reset()
            pred, weights = stream_with_weights(defense, x_adv, order, attacked)
            acc = float((pred[attacked] == y_cpu[attacked]).float().mean())
            accs.append(acc)
            if acc < best_acc:  # strict: the earliest round wins ties
                best, best_acc = x_adv, acc
                # this round's stream (reset state, the runner's order) is the one the runner scores
                best_stream = (pred, list(defense.last_delays), list(defense.last_stats))
            if r == self.rounds:
                break
            history.append(weights)
            x_adv = x_adv.clone()
            rounds = history[-1:] if self.mode == "fpa" else history
            self.pgd.reduce = "min" if self.mode == "min" else "mean"
            try:
                for i in idx.tolist():
                    self.pgd.ensemble = nets[: len(rounds)]
                    for net, w in zip(self.pgd.ensemble, rounds):
                        net.load_state_dict(w[i])
                    x_adv[i : i + 1] = self.craft(self.pgd.ensemble[0], x[i : i + 1], y[i : i + 1], gen)
            finally:
                self.pgd.ensemble = None
        self.last_round_acc = accs
        if best_stream is not None:
            self._keep_stream(*best_stream)
        return best


@register("fpa")
class FPA(_RoundsAttack):
    """Fixed-point attack (Chen et al., ICLR 2022): PGD against the latest round's adapted model."""

    mode = "fpa"


@register("gmsa-avg")
class GMSAAvg(_RoundsAttack):
    """GMSA-AVG (Chen et al., ICLR 2022): maximise the mean loss over every round's adapted model."""

    mode = "avg"


@register("gmsa-min")
class GMSAMin(_RoundsAttack):
    """GMSA-MIN (Chen et al., ICLR 2022): maximise the minimum loss over every round's adapted model."""

    mode = "min"
