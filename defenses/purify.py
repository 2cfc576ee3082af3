"""Input-purification defenses: predict(x) = model(transform(x)).

The ``adaptive`` pipeline an attack differentiates is BPDA with the identity backward through the
transform (Athalye et al. 2018), wrapped in EOT over ``eot_samples`` draws when the transform is
random.
"""

from __future__ import annotations

import torch

from attacks.bpda import BPDAModel
from attacks.eot import EOT
from defenses.base import RuntimeDefense, batched_logits


class Purifier(RuntimeDefense):
    eot_samples: int = 8

    def transform(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return batched_logits(lambda b: self.model(self.transform(b)), x, batch_size=self.batch_size)

    batch_size: int = 512

    def attack_model(self):
        pipeline = BPDAModel(self.model, self.transform)
        return EOT(pipeline, self.eot_samples) if self.randomized else pipeline
