"""No runtime defense: the trained model as it is."""

from __future__ import annotations

import torch

from bench.core.contracts import RuntimeDefense, batched_logits
from bench.core.methods import register_defense as register


@register("none")
class NoDefense(RuntimeDefense):
    """No runtime defense: predict(x) = model(x), the undefended baseline of every row."""

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return batched_logits(self.model, x)
