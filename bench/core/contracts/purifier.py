"""Input-purification defenses: predict(x) = model(transform(x)).

The ``adaptive`` pipeline an attack differentiates is BPDA with the identity backward through the
transform (Athalye et al. 2018), wrapped in EOT over ``eot_samples`` draws when the transform is
random. ``eot_samples`` is the purifier's one declared EOT draw count: the runner records it, the
``eot`` attack takes it when the grid gives no ``n``, and the reliability checks read the record.
"""

from __future__ import annotations

import torch

from bench.core.approx import EOT, BPDAModel
from bench.core.contracts.defense import RuntimeDefense, batched_logits
from bench.core.errors import BenchError

#: EOT draws per gradient when a purifier declares no count of its own.
EOT_SAMPLES = 8


class Purifier(RuntimeDefense):
    """Subclasses implement ``transform(x) -> x'`` (images in [0, 1]), take ``eot_samples`` in their
    constructor (default ``EOT_SAMPLES`` unless the method has its own) and pass it to this one, so
    every purifier accepts it in a grid; set ``randomized`` (a class attribute or a property) when
    the transform draws random numbers. (Not ``**kw``: the runner passes ``seed`` and ``cache_dir``
    to any constructor that takes ``**kw``.)"""

    eot_samples: int = EOT_SAMPLES  # for subclasses that do not call Purifier.__init__
    batch_size: int = 512

    def __init__(self, eot_samples: int = EOT_SAMPLES) -> None:
        if int(eot_samples) < 1:
            raise BenchError(f"eot_samples (EOT draws per gradient) must be at least 1, got {eot_samples}")
        self.eot_samples = int(eot_samples)

    def transform(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return batched_logits(lambda b: self.model(self.transform(b)), x, batch_size=self.batch_size)

    def attack_model(self):
        pipeline = BPDAModel(self.model, self.transform)
        return EOT(pipeline, self.eot_samples) if self.randomized else pipeline
