"""Cells whose RMC streams run together (issue 16; defenses/rmc_batched.py).

RMC adapts a network at every test point, one point after another: on a GPU one stream of 128-image
steps leaves the device mostly idle. Cells that run the same prepared RMC (same model, D' and
hyperparameters, same test points and seed) under different attacks are independent streams that
differ only in their inputs. When the evaluator reaches the first such cell, :class:`StreamBatcher`
looks ahead in this process's queue for up to B-1 more, crafts their adversarial examples (each as
its own cell would: same seed, same audit, same cache), and runs all the streams as one
:class:`~defenses.rmc_batched.BatchedRMC`. The later cells then take their predictions from it.

Only attacks whose examples do not depend on the defense's state (threat ``base`` or ``transfer``)
join a batch: a stream attack runs its own stream. Each record carries ``stream_batch`` (B) and its
share of the batch's time; the predictions equal the one-stream-at-a-time ones
(tests/test_stream_batch.py). ``auto``: batches of 16 on a GPU, 1 (off) on a CPU, where batched
streams measured slower (results/benchmarks/rmc_batched.json: 0.67-0.89x).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.core.errors import BenchError
from bench.spec.grid import Cell

if TYPE_CHECKING:  # torch loads with the runner: `bench run` on a finished grid never imports it
    import torch

GPU_BATCH = 16
ENV = "BENCH_STREAM_BATCH"


def parse_stream_batch(value: str | int | None) -> int | None:
    """``--stream-batch``: a positive integer, or ``auto`` (None: decided by the device)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "auto")):
        return None
    text = str(value).strip()
    if not text.isdigit() or int(text) < 1:
        raise BenchError(f"--stream-batch must be a positive integer or 'auto', got {value!r}")
    return int(text)


def resolve_stream_batch(option: int | None, device: torch.device) -> int:
    """Streams per batch: the option, else ``$BENCH_STREAM_BATCH``, else 16 on a GPU and 1 on a CPU."""
    if option is None:
        option = parse_stream_batch(os.environ.get(ENV))
    if option is not None:
        return option
    return GPU_BATCH if device.type == "cuda" else 1


def batch_key(cell: Cell) -> tuple[Any, ...] | None:
    """Cells (of one grid) with equal keys run the same prepared defense on the same points in the
    same order; None for a cell whose adversarial examples depend on the defense (it runs its own
    stream). The grid-wide fields (dataset, training split and limit) are the same for every cell."""
    if cell.threat not in ("base", "transfer"):
        return None
    from bench.core.cache import config_hash

    return (cell.arch, cell.train_defense, config_hash(cell.train_params), cell.runtime_defense,
            config_hash(cell.runtime_params), cell.limit, cell.seed)


@dataclass
class Prefetched:
    """One later cell's stream, computed in a batch: predictions in test-set order, per-point
    delays and stats in stream order, and its share of the batch's seconds."""

    pred: torch.Tensor
    delays: list[float]
    stats: list[dict[str, Any]]
    seconds: float
    streams: int


class StreamBatcher:
    """Looks ahead in the run's queue (``upcoming``) and runs the streams of cells that share a
    prepared RMC together. ``size`` 1 turns it off."""

    def __init__(self, size: int = 1) -> None:
        self.size = size
        self.upcoming: list[Cell] = []  # set by the runner: this process's cells, in its order
        self.started: set[str] = set()  # cells this process has begun evaluating
        self.ready: dict[str, Prefetched] = {}
        self.lent = 0.0  # seconds the current cell spent on later cells' work
        self.borrowed = 0.0  # seconds of the current cell's work done in an earlier cell's batch
        #: claims a later cell for this process (the runner's per-cell claim); False: another run has it
        self.reserve: Callable[[Cell], bool] = lambda cell: True

    def begin(self, cell: Cell) -> None:
        self.started.add(cell.cell_id)
        self.lent = self.borrowed = 0.0

    def take(self, cell: Cell) -> Prefetched | None:
        """The cell's stream if an earlier cell's batch ran it (its crafting and stream share become
        this cell's ``borrowed`` seconds)."""
        res = self.ready.pop(cell.cell_id, None)
        self.borrowed = res.seconds if res is not None else 0.0
        return res

    def partners(self, cell: Cell) -> list[Cell]:
        """Up to size-1 later cells of this process that can share ``cell``'s stream batch."""
        key = batch_key(cell)
        if self.size <= 1 or key is None:
            return []
        out, seen = [], {cell.cell_id}
        for other in self.upcoming:
            if len(out) >= self.size - 1:
                break
            if (other.cell_id in seen or other.cell_id in self.started or other.cell_id in self.ready
                    or batch_key(other) != key or not self.reserve(other)):
                continue
            seen.add(other.cell_id)
            out.append(other)
        return out

    def run(self, cell: Cell, defense: Any, x_adv: torch.Tensor, y: torch.Tensor,
            adversarial: Callable[[Cell], torch.Tensor]) -> Prefetched | None:
        """``cell``'s stream, batched with its partners' when there are any (None: run it alone).

        ``adversarial(other)`` returns another cell's audited examples (crafted as that cell would
        craft them); a partner whose crafting fails is left to fail in its own turn."""
        import torch

        from bench.core.stream import stream_order
        from defenses.rmc_batched import BatchedRMC, can_batch

        if self.size <= 1 or not can_batch(defense):
            return None
        candidates = self.partners(cell)
        if not candidates:
            return None
        group, inputs, craft_s = [cell], [x_adv], [0.0]
        for other in candidates:
            t0 = time.perf_counter()
            # Crafted under that cell's own seed, as run_cell would, without moving this cell's RNG.
            with torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_available() else []):
                torch.manual_seed(other.seed)
                try:
                    inputs.append(adversarial(other))
                except Exception:  # noqa: BLE001 - the partner fails in its own turn, with its own record
                    continue
                finally:
                    spent = time.perf_counter() - t0
            group.append(other)
            craft_s.append(spent)
        if len(group) == 1:
            return None
        dev = next(defense.adapted.parameters()).device
        order = stream_order(len(y), cell.seed)
        defense.reset()  # every stream starts from the state right after prepare, as predict() does
        batched = BatchedRMC(defense, len(group))
        t0 = time.perf_counter()
        logits = batched.predict(torch.stack([xa.to(dev)[order] for xa in inputs]))
        stream_s = time.perf_counter() - t0
        if not torch.isfinite(logits).all():
            raise BenchError(f"non-finite logits (NaN or inf) from runtime defense {cell.runtime_defense!r}")
        b = len(group)
        delays = [d / b for d in batched.last_delays]  # each stream's share of every step
        results = []
        for i, spent in enumerate(craft_s):
            pred = torch.empty(len(y), dtype=torch.long)
            pred[order] = logits[i].argmax(1).cpu()
            # each cell is charged its own crafting and an equal share of the batched stream
            results.append(Prefetched(pred, list(delays), batched.last_stats[i], spent + stream_s / b, b))
        for member, res in zip(group[1:], results[1:]):
            self.ready[member.cell_id] = res
        self.lent += sum(r.seconds for r in results[1:])
        return results[0]
