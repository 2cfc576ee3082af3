"""Bit-depth reduction, the simplest feature squeezer (Xu, Evans and Qi, NDSS 2018)."""

from __future__ import annotations

import torch
from torch import nn

from attacks.bpda import BPDAModel
from bench.core.errors import BenchError
from defenses import RuntimeDefense


class BitDepth(RuntimeDefense):
    """Quantise each pixel to ``bits`` bits before the model; adaptive attacks use BPDA (identity)."""

    def __init__(self, bits: int = 3) -> None:
        if not 1 <= int(bits) <= 8:
            raise BenchError(f"bits must lie in 1..8, got {bits}")
        self.bits = int(bits)

    def squeeze(self, x: torch.Tensor) -> torch.Tensor:
        levels = 2**self.bits - 1
        return torch.round(x * levels) / levels

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.squeeze(x))

    def attack_model(self) -> nn.Module:
        # Rounding has zero gradient almost everywhere: differentiate through the identity instead.
        return BPDAModel(self.model, self.squeeze)
