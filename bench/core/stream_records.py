"""Per-point records of stream cells: what happened at each position of a stateful defense's stream.

RMC's Figures 2 and 3 (Wu, Yuan, Wu, ICML 2020) plot inference delay, robustness and local
adaptation steps against the number of test points seen. A stream cell's record keeps, under
``per_point``, one column per quantity, in stream order (position j = list index j, the (j+1)-th
point the defender saw):

- ``index``: the test-set index of the point at that position (``bench.core.stream.stream_order``),
- ``correct``: "0"/"1" per position, the defender's prediction on the point it saw there (x_adv,
  or x where an ``attack_rate`` < 1 stream left the point clean),
- ``adapt_epochs`` (RMC family only): epochs of local adaptation for the point;

and, beside it, ``per_point_delay_s``: the seconds the defender spent on each point (a measurement,
like ``seconds``: left out where records are compared for equality, bench.track.results).

Columns rather than a list of objects keep results/<grid>.jsonl small: a 100-point stream adds about
1.5 kB to its record, a 1,000-point CIFAR-10 stream about 15 kB.
"""

from __future__ import annotations

from typing import Any

import torch

from bench.core.stream import stream_order


def stream_record(correct: torch.Tensor, seed: int, delays: list[float] | None,
                  stats: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The ``per_point`` (and ``per_point_delay_s``) fields of a stream cell's record.

    ``correct`` is in test-set index order; ``delays`` and ``stats`` in stream order (as the
    defense produced them); columns whose length is not the stream's are left out."""
    n = len(correct)
    order = stream_order(n, seed)
    pp: dict[str, Any] = {"index": order.tolist(),
                          "correct": "".join("1" if bool(correct[i]) else "0" for i in order.tolist())}
    if stats and len(stats) == n and all("adapt_epochs" in s for s in stats):
        pp["adapt_epochs"] = [int(s["adapt_epochs"]) for s in stats]
    out: dict[str, Any] = {"per_point": pp}
    if delays and len(delays) == n:
        out["per_point_delay_s"] = [round(float(d), 4) for d in delays]
    return out


def positions(record: dict[str, Any]) -> list[int]:
    """1, 2, ..., n: the number of test points seen at each position of the record's stream."""
    return list(range(1, len(record["per_point"]["correct"]) + 1))


def running_accuracy(record: dict[str, Any], window: int | None = None) -> list[float]:
    """Accuracy (%) over the points seen so far (``window`` None) or over the last ``window`` points."""
    bits = [c == "1" for c in record["per_point"]["correct"]]
    out, hits = [], 0
    for j, b in enumerate(bits):
        hits += b
        if window is not None and j >= window:
            hits -= bits[j - window]
        out.append(100.0 * hits / min(j + 1, window or j + 1))
    return out


#: What a "vs-points" figure can plot, per position: metric name -> (axis label, values of a record).
VS_POINTS_METRICS = {
    "robust_acc": "robust accuracy over the points seen so far (%)",
    "delay_s": "inference delay per point (s)",
    "adapt_epochs": "local adaptation epochs",
}


def series(record: dict[str, Any], metric: str, window: int | None = None) -> tuple[list[int], list[float]]:
    """(points seen, value) of ``metric`` along one record's stream; empty when the record lacks it."""
    pp = record.get("per_point") or {}
    if not pp.get("correct"):
        return [], []
    if metric == "robust_acc":
        return positions(record), running_accuracy(record, window)
    values = record.get("per_point_delay_s") if metric == "delay_s" else pp.get(metric)
    if not values:
        return [], []
    return positions(record), [float(v) for v in values]
