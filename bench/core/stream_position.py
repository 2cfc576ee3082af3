"""Accuracy at stream position p: the RMC paper's PGD-Skip statistic, from a stream cell's record.

RMC's Table 5 and supplement Tables 2-3 (Wu, Yuan, Wu, ICML 2020) report robustness "at p": on the
test point the defender meets after having seen p points (PGD-Skip attacks x^(p+1); PGD-Skip-Delayed
with delay q attacks x^(p+q+1) with weights adapted to x^(1..p)). One stream has one point per
position, so a single position is a 0/1 outcome. We report instead

    accuracy at position p with window w = the share of correct predictions on the w points at
    stream positions p+1, ..., p+w (after p points; list indices p .. p+w-1 of ``per_point.correct``),

with a 95% Wilson interval over those w points. This is a window of w points starting at p in ONE
stream, not position p averaged over several independently shuffled streams: it needs no extra
runs, and it mixes the defender's states at p .. p+w-1, so a small w stays closest to the paper.
A window that runs past the stream's end is clipped to the points that exist (``clipped`` says so);
a window starting at or beyond the end is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.core.errors import BenchError
from bench.core.stats import wilson_interval


@dataclass(frozen=True)
class Window:
    """Outcome of one window: ``hits`` correct of ``n`` points at positions start+1 .. end."""

    p: int
    w: int
    start: int  # points seen before the window (p plus any delay)
    end: int  # last position in the window (1-based), after clipping
    hits: int
    n: int
    clipped: bool  # True when the stream ended before start + w

    @property
    def accuracy(self) -> float:
        return self.hits / self.n

    @property
    def ci(self) -> tuple[float, float]:
        """95% Wilson interval of the window's accuracy."""
        return wilson_interval(self.hits, self.n)


def accuracy_at(correct: str, p: int, w: int, delay: int = 0) -> Window:
    """Accuracy over the ``w`` points after ``p + delay`` points of a stream (``correct``: "0"/"1"
    per position in stream order, as ``per_point.correct``). ``delay`` is PGD-Skip-Delayed's q: the
    point attacked with the weights of position p is p + q + 1."""
    for name, v, least in (("p", p, 0), ("window", w, 1), ("delay", delay, 0)):
        if not isinstance(v, int) or isinstance(v, bool) or v < least:
            raise BenchError(f"position {name} must be an integer >= {least}, got {v!r}")
    start = p + delay
    if start >= len(correct):
        raise BenchError(f"position p = {p}" + (f" (+ delay {delay})" if delay else "")
                         + f" is beyond the stream's {len(correct)} points; use p < {len(correct) - delay}")
    end = min(start + w, len(correct))
    bits = correct[start:end]
    return Window(p=p, w=w, start=start, end=end, hits=bits.count("1"), n=len(bits), clipped=end < start + w)


def record_accuracy_at(record: dict[str, Any], p: int, w: int, delay: int = 0) -> Window | None:
    """``accuracy_at`` on a stream cell's record; None when the record keeps no per-point results."""
    correct = (record.get("per_point") or {}).get("correct")
    if not correct:
        return None
    return accuracy_at(correct, p, w, delay)
