"""Defense contracts, shaped like scikit-learn estimators.

Train-time: ``TrainDefense(**hp).train(model, train_set) -> model`` (produces weights).
Runtime: ``RuntimeDefense(**hp).prepare(model, train_set)`` once, then ``predict(x) -> logits`` many
times. Stateful runtime defenses (RMC, RMC+) subclass :class:`StatefulDefense`: they see test points
one at a time in stream order and declare ``snapshot()`` / ``restore(state)`` / ``reset()``, the
adapted network (``adapted_model``), prediction observers and their per-point outputs
(``last_delays``, ``last_stats``), which the stream attacks (PGD-Skip, FPA, GMSA), pgd-nn and the
runner use instead of reaching into private attributes.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from bench.core.data import Dataset
from bench.core.errors import BenchError

EpochCallback = Callable[[int, dict[str, float]], None]


class Defense:
    kind: ClassVar[str] = ""
    #: Per dataset family ("digits", "mnist", "cifar10") hyperparameter defaults from the seeds.
    dataset_defaults: ClassVar[dict[str, dict[str, Any]]] = {}
    #: Least value of a count hyperparameter, ``name: (least, why)``, checked when a grid loads
    #: (bench.spec.validate).
    minimums: ClassVar[dict[str, tuple[int, str]]] = {}

    @classmethod
    def param_problem(cls, name: str, value: Any) -> str | None:
        """Why ``value`` is no valid ``name`` beyond its type and ``minimums`` (e.g. a ratio outside
        its range), as one line; None: fine. Checked when a grid loads (bench.spec.validate)."""
        return None

    def config(self) -> dict[str, Any]:
        """Hyperparameters that determine the result (for hashing and MLflow params)."""
        return {k: v for k, v in vars(self).items()
                if not k.startswith("_") and isinstance(v, (int, float, str, bool, type(None), list, tuple))}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.config().items())})"


class TrainDefense(Defense):
    """Produces weights. Subclasses implement ``train``."""

    kind: ClassVar[str] = "train"
    #: ``epochs = 0`` (or less) trains nothing and would record an untrained model as a trained one.
    minimums: ClassVar[dict[str, tuple[int, str]]] = {
        "epochs": (1, "fewer trains nothing"), "pretrain_epochs": (0, ""), "batch_size": (1, "")}

    def build(self, model: nn.Module) -> nn.Module:
        """Change the architecture before training (default: none). The runner also applies it
        before loading a cached checkpoint, so the weights fit."""
        return model

    def train(self, model: nn.Module, train_set: Dataset, *, device: torch.device | str = "cpu",
              callback: EpochCallback | None = None, resume_dir: Any = None) -> nn.Module:
        raise NotImplementedError  # pragma: no cover


class RuntimeDefense(Defense):
    """Wraps a trained model at inference time."""

    kind: ClassVar[str] = "runtime"
    #: Predictions depend on earlier test points (evaluate as a stream, one point at a time).
    stateful: ClassVar[bool] = False
    #: Predictions are random (adaptive attacks must use EOT).
    randomized: ClassVar[bool] = False
    #: Predicting a point trains a network (RMC adapts the model, RIDE fits a denoiser): its cells
    #: cost orders of magnitude more than others', so ``bench run --jobs`` starts them first.
    trains_per_point: ClassVar[bool] = False
    #: ``prepare`` needs the training set (nearest-neighbour databases); others get None, so a
    #: pretrained model with such defenses is evaluated from the test split alone.
    needs_train_set: ClassVar[bool] = False

    model: nn.Module

    def prepare(self, model: nn.Module, train_set: Dataset | None = None) -> RuntimeDefense:
        self.model = model.eval()
        return self

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``predict(x)``, refusing NaN or inf: what the harness and stream attacks score, so a broken
        defense fails its cell instead of being scored (subclasses implement ``predict``, not this)."""
        out = self.predict(x)
        if not torch.isfinite(out).all():
            name = getattr(self, "registry_name", type(self).__name__)
            raise BenchError(f"non-finite logits (NaN or inf) from runtime defense {name!r}")
        return out

    def attack_model(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """What an ``adaptive`` gradient attack differentiates: the defended pipeline.

        Default: the undefended model (correct for ``none``; other defenses override with exact
        gradients, BPDA or EOT).
        """
        return self.model

    def reset(self) -> None:
        """Forget the stream (stateful defenses); a no-op for stateless ones."""

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


PredictionObserver = Callable[[nn.Module], None]


class StatefulDefense(RuntimeDefense, metaclass=ABCMeta):
    """A runtime defense whose predictions depend on the test points it saw before (RMC, Wu et al.,
    ICML 2020): the runner feeds it the test set one point at a time in ``bench.core.stream`` order,
    starting from ``reset()``, and stream attacks (PGD-Skip; FPA / GMSA, Chen et al., ICLR 2022)
    simulate that stream on it.

    A subclass must implement:

    - ``snapshot() -> state``: the complete state (weights, optimizer, random generators, anything
      the stream changes), opaque to callers, independent of later changes;
    - ``restore(state)``: put a snapshot back, so the stream that follows replays exactly;
    - ``reset()``: back to the state right after ``prepare`` (the start of every evaluation stream);
    - ``adapted_model``: the network that will predict the next point (a live module, not a copy);
    - ``predict(x)``: the points of x in order, one at a time, calling :meth:`notify_prediction` once
      per point, right after predicting it and before adapting any further.

    Observers (:meth:`add_prediction_observer`) are how an attack sees the weights each point was
    predicted with; nothing may replace methods on the instance to get at them.

    Per-point outputs of the last ``predict`` call, in stream order, read by the harness: a subclass
    assigns ``last_delays`` (seconds each point took) and ``last_stats`` (one dict of statistics per
    point, e.g. RMC's adaptation epochs and stop reason) in ``predict``. A defense that learns from
    the true labels of points already predicted overrides :meth:`reveal`.
    """

    stateful: ClassVar[bool] = True
    #: Seconds each point of the last ``predict`` took, stream order (empty: not measured).
    last_delays: Sequence[float] = ()
    #: Per-point statistics of the last ``predict``, stream order (empty: none).
    last_stats: Sequence[dict[str, Any]] = ()

    def reveal(self, y: torch.Tensor) -> None:
        """The true labels of the next ``len(y)`` points, handed over before they are predicted; a
        defense may learn from them only after predicting each (RMC Table 7's labelled U, ``hindsight-adv``).
        Default: ignored."""

    @abstractmethod
    def snapshot(self) -> Any:
        """The complete state now (a deep copy: later predictions must not change it)."""

    @abstractmethod
    def restore(self, state: Any) -> None:
        """Return to ``state`` (from :meth:`snapshot`): the same points then give the same predictions."""

    @abstractmethod
    def reset(self) -> None:
        """Return to the state right after ``prepare`` (a fresh stream)."""

    @property
    @abstractmethod
    def adapted_model(self) -> nn.Module:
        """The network, with its current weights, that predicts the next stream point."""

    def add_prediction_observer(self, fn: PredictionObserver) -> RemovableHandle:
        """Call ``fn(adapted_model)`` after every stream point's prediction, with the weights that
        predicted it (copy them in ``fn`` to keep them: the same module adapts on). Observers run in
        the order they were added. Returns a handle: ``handle.remove()``, or use it as a context
        manager, ``with defense.add_prediction_observer(fn): defense.predict(x)``."""
        observers = self._observers()
        handle = RemovableHandle(observers)
        observers[handle.id] = fn
        return handle

    def notify_prediction(self) -> None:
        """Subclasses call this once per stream point, right after predicting it (see the class doc)."""
        observers = self.__dict__.get("_prediction_observers")
        if observers:
            model = self.adapted_model
            for fn in list(observers.values()):
                fn(model)

    def _observers(self) -> OrderedDict[int, PredictionObserver]:
        # lazily, so that subclasses need not call an __init__ here (NeighbourDefense's does not)
        return self.__dict__.setdefault("_prediction_observers", OrderedDict())


@torch.no_grad()
def batched_logits(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                   batch_size: int = 512) -> torch.Tensor:
    """Logits of ``model`` on ``x`` in batches, without gradients."""
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
