"""The contracts between the methods (attacks/, defenses/) and the harness: what they exchange.

Everything a method implements or returns, and everything the harness reads from a method, is
declared here; neither side reaches into the other's attributes.

Attacks (shaped like torchattacks and foolbox: configure once, call on (model, x, y)):

- :class:`Attack`: the base class; ``run(model, x, y) -> AttackResult`` is what the harness calls,
  ``attack(model, x, y) -> x_adv`` the shorthand; ``bind(defense, stream_seed=...)`` hands a
  defense-aware attack its defense and the harness's stream order.
- :class:`AttackResult`: x_adv plus the target classes, the attacked points of a stream attack, the
  defender's predictions on an already-simulated stream (:class:`StreamOutcome`), per-example loss
  traces and first-success steps.

Defenses (shaped like scikit-learn estimators: prepare once, predict many):

- :class:`TrainDefense` (``train`` produces weights) and :class:`RuntimeDefense` (``prepare``,
  ``predict``, ``logits``, ``attack_model``).
- :class:`StatefulDefense`: a defense whose predictions depend on the stream of points it saw (RMC):
  ``snapshot`` / ``restore`` / ``reset``, ``adapted_model``, prediction observers, ``reveal`` and its
  per-point outputs ``last_delays`` / ``last_stats``.
- :class:`Purifier`: ``predict(x) = model(transform(x))``, attacked through BPDA / EOT.
- :class:`NeighbourScorer`: the K-NN search and scoring that PGD-NN differentiates through.

The stream: :func:`stream_order` (the order a stateful defense sees the test points) and
:func:`attack_mask` (which points a stream attack attacks).
"""

from bench.core.contracts.attack import (
    NORMS,
    Attack,
    AttackResult,
    Model,
    StreamOutcome,
    Traced,
    budget_limit,
    project_l2,
    project_linf,
    random_wrong_class,
    uniform_like,
)
from bench.core.contracts.defense import (
    Defense,
    EpochCallback,
    PredictionObserver,
    RuntimeDefense,
    StatefulDefense,
    TrainDefense,
    batched_logits,
)
from bench.core.contracts.neighbours import NeighbourScorer
from bench.core.contracts.purifier import EOT_SAMPLES, Purifier
from bench.core.stream import attack_mask, stream_order

__all__ = [
    "EOT_SAMPLES", "NORMS", "Attack", "AttackResult", "Defense", "EpochCallback", "Model", "NeighbourScorer",
    "PredictionObserver", "Purifier", "RuntimeDefense", "StatefulDefense", "StreamOutcome", "Traced", "TrainDefense",
    "attack_mask", "batched_logits", "budget_limit", "project_l2", "project_linf", "random_wrong_class", "stream_order",
    "uniform_like",
]
