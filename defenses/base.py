"""Defense contracts, shaped like scikit-learn estimators.

Train-time: ``TrainDefense(**hp).train(model, train_set) -> model`` (produces weights).
Runtime: ``RuntimeDefense(**hp).prepare(model, train_set)`` once, then ``predict(x) -> logits`` many
times. Stateful runtime defenses (RMC) see test points one at a time in stream order and expose
``snapshot()`` / ``restore(state)``; ``reset()`` returns them to the state right after ``prepare``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from bench.core.data import Dataset

EpochCallback = Callable[[int, dict[str, float]], None]


class Defense:
    kind: ClassVar[str] = ""
    #: Per dataset family ("digits", "mnist", "cifar10") hyperparameter defaults from the seeds.
    dataset_defaults: ClassVar[dict[str, dict[str, Any]]] = {}

    def config(self) -> dict[str, Any]:
        """Hyperparameters that determine the result (for hashing and MLflow params)."""
        return {k: v for k, v in vars(self).items()
                if not k.startswith("_") and isinstance(v, (int, float, str, bool, type(None), list, tuple))}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.config().items())})"


class TrainDefense(Defense):
    """Produces weights. Subclasses implement ``train``."""

    kind: ClassVar[str] = "train"

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
    #: ``prepare`` needs the training set (nearest-neighbour databases); others get None, so a
    #: pretrained model with such defenses is evaluated from the test split alone.
    needs_train_set: ClassVar[bool] = False

    model: nn.Module

    def prepare(self, model: nn.Module, train_set: Dataset | None = None) -> RuntimeDefense:
        self.model = model.eval()
        return self

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover

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


@torch.no_grad()
def batched_logits(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                   batch_size: int = 512) -> torch.Tensor:
    """Logits of ``model`` on ``x`` in batches, without gradients."""
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
