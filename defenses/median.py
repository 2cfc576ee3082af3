"""Median filter (used as a baseline purifier in the RIDE paper, supplement Table 4: k = 3 ... 11).

Batched on the device with ``unfold``: zero padding of k // 2, median over each k x k window per
channel (k odd, so the median is exact).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.core.contracts import EOT_SAMPLES, Purifier
from bench.core.errors import BenchError
from bench.core.methods import register_defense as register


def median_filter(x: torch.Tensor, k: int) -> torch.Tensor:
    b, c, h, w = x.shape
    cols = F.unfold(F.pad(x, (k // 2,) * 4), k)  # (B, C*k*k, H*W), zero padding
    return cols.view(b, c, k * k, h * w).median(2).values.view(b, c, h, w)


@register("median")
class MedianFilter(Purifier):
    """Median filter with a k x k window."""

    dataset_defaults = {"digits": {"k": 3}, "mnist": {"k": 3}, "cifar10": {"k": 3}}

    def __init__(self, k: int = 3, eot_samples: int = EOT_SAMPLES) -> None:
        super().__init__(eot_samples=eot_samples)
        if int(k) < 1 or int(k) % 2 == 0:
            raise BenchError(f"median kernel size k must be a positive odd number, got {k}")
        self.k = int(k)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return median_filter(x, self.k)
