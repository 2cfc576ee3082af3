"""The evaluation stream of stateful runtime defenses (RMC, RMC+), defined once.

The runner feeds a stateful defense its test set as a fresh stream in ``stream_order(n, seed)``;
stream-aware attacks (PGD-Skip and its variants, FPA, GMSA) simulate that same order, so the
weights they attack at a position are the ones the defender has there (RMC paper, Section 5.2).
"""

from __future__ import annotations

import torch

from bench.core.errors import BenchError

#: Offset that decorrelates the choice of attack points from the stream order (same seed).
_ATTACK_MASK_SALT = 0x5EED


def stream_order(n: int, seed: int) -> torch.Tensor:
    """The order (a permutation of range(n)) in which a stateful defense sees n test points."""
    return torch.randperm(int(n), generator=torch.Generator().manual_seed(int(seed)))


def attack_mask(n: int, rate: float, seed: int) -> torch.Tensor:
    """Which of n test points are attack points: a seeded subset of round(rate * n) of them
    (at least one when rate > 0); the others reach the defender clean."""
    if not 0.0 < float(rate) <= 1.0:
        raise BenchError(f"attack_rate must lie in (0, 1], got {rate}")
    mask = torch.zeros(int(n), dtype=torch.bool)
    if rate >= 1.0:
        mask[:] = True
        return mask
    k = min(int(n), max(1, round(float(rate) * n)))
    pick = torch.randperm(int(n), generator=torch.Generator().manual_seed(int(seed) + _ATTACK_MASK_SALT))[:k]
    mask[pick] = True
    return mask
