"""Uncertainty of accuracies measured on n test points: Wilson intervals and McNemar's paired test.

- Wilson score interval (Wilson, JASA 1927; recommended over the Wald interval by Brown, Cai &
  DasGupta, Statistical Science 2001): 95% coverage close to nominal even at n = 100 and
  accuracies near 0 or 1, where the Wald interval collapses to zero width.
- Exact McNemar test (McNemar, Psychometrika 1947): two accuracies measured on the *same* examples
  differ only through the discordant examples (right under one cell, wrong under the other); under
  the null each discordant example falls either way with probability 1/2, so the two-sided p-value
  is a binomial tail. Two cells on the same test points are paired, so this is much sharper than
  comparing two independent intervals.

Pure Python (no scipy), so the leaderboard stays importable without torch.
"""

from __future__ import annotations

import math
from statistics import NormalDist

#: Two-sided 95% intervals everywhere in the records, tables and MLflow.
LEVEL = 0.95


def wilson_interval(successes: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``successes / n``, as (low, high) in [0, 1]."""
    if n <= 0:
        raise ValueError("n must be positive")
    if not 0 <= successes <= n:
        raise ValueError(f"successes {successes} outside [0, {n}]")
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # The exact endpoints are 0 and 1 at the extremes; round-off must not push them past.
    return (0.0 if successes == 0 else max(0.0, centre - half), 1.0 if successes == n else min(1.0, centre + half))


def interval_of(outcomes: str, level: float = LEVEL) -> tuple[float, float] | None:
    """Wilson interval of a per-example outcome string ("1" = correct); None when empty."""
    if not outcomes:
        return None
    return wilson_interval(outcomes.count("1"), len(outcomes), level)


def mcnemar(a: str, b: str) -> tuple[int, int, float]:
    """Exact two-sided McNemar test of two per-example outcome strings over the same examples.

    Returns (only_a, only_b, p): examples right only under ``a``, right only under ``b``, p-value."""
    if len(a) != len(b):
        raise ValueError(f"paired outcomes need the same examples: {len(a)} vs {len(b)}")
    only_a = sum(x == "1" and y == "0" for x, y in zip(a, b))
    only_b = sum(x == "0" and y == "1" for x, y in zip(a, b))
    m = only_a + only_b
    if m == 0:
        return only_a, only_b, 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(m, i) for i in range(k + 1)) / 2**m
    return only_a, only_b, min(1.0, 2 * tail)
