"""WebNN: nearest-neighbour projection onto a web-scale database (Dubey et al., CVPR 2019), down-scaled
as in the RMC paper: the database is D' (D plus adversarial copies), prediction = sum_k w_k s_k over
the K nearest neighbours' softmax vectors s_k, with uniform weights (UW, default) or CBW-E weights
w_k = log C - H(s_k). K defaults to 75, DkNN's k (Papernot & McDaniel, 2018): the RMC paper gives K
only for RMC.
"""

from __future__ import annotations

import math

import torch

from bench.core.errors import BenchError
from bench.core.methods import register_defense as register
from defenses.neighbors import NeighbourDefense


@register("webnn")
class WebNN(NeighbourDefense):
    """Weighted mean of the K nearest D' examples' softmax vectors."""

    dataset_defaults = {
        "digits": {"k": 32, "copies": 1, "db_params": {"eps": 0.1}},
        "mnist": {"k": 75, "copies": 1, "db_params": {"eps": 0.3}},
        "cifar10": {"k": 75, "copies": 4, "db_params": {"eps": 8 / 255, "steps": 10, "step_size": 2 / 255}},
    }

    def __init__(self, k: int = 75, weighting: str = "uniform", **kw) -> None:
        super().__init__(k=k, **kw)
        if weighting not in ("uniform", "cbw-e"):
            raise BenchError(f"webnn weighting must be 'uniform' or 'cbw-e', got {weighting!r}")
        self.weighting = weighting

    def prepare(self, model, train_set=None):
        super().prepare(model, train_set)
        self._row_probs = self.database_probs()
        return self

    def score_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Uniform (UW) or CBW-E weighted mean of the rows' softmax vectors."""
        s = self.row_probs().to(rows.device)[rows]  # (B, K, C)
        if self.weighting == "uniform":
            w = torch.ones(s.shape[:2], device=s.device)
        else:
            entropy = -(s * s.clamp_min(1e-12).log()).sum(2)
            w = (math.log(s.shape[2]) - entropy).clamp_min(1e-6)
        return (w[:, :, None] * s).sum(1) / w.sum(1, keepdim=True)
