"""The tracking outbox: MLflow payloads waiting to be mirrored, next to the results they mirror.

``results/<grid>.jsonl`` is the source of truth and MLflow a mirror of it. Before a cell's record
is written, its MLflow payload (record, params) goes to ``results/<grid>.outbox.jsonl``; once MLflow
has the cell's run the entry is removed. When the tracking store fails mid-run the entries stay
(with the sample image under ``results/<grid>.outbox/``), and ``bench track --grid NAME`` replays
them later, idempotently: ``Tracker.log_cell`` keeps one run per ``cell_id``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from bench.core.cache import atomic_write_text
from bench.core.errors import BenchError
from bench.core.locks import file_lock
from bench.core.paths import inside


class Outbox:
    def __init__(self, results_dir: Path, grid: str) -> None:
        self.path = inside(results_dir, f"{grid}.outbox.jsonl")
        self.samples = inside(results_dir, f"{grid}.outbox")
        self.grid = grid

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        out: dict[str, dict[str, Any]] = {}
        for lineno, line in enumerate(self.path.read_bytes().split(b"\n"), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except (ValueError, RecursionError):  # bad JSON, bad UTF-8, absurd nesting
                raise BenchError(f"{self.path}:{lineno} is not valid JSON; fix or remove that line") from None
            if not isinstance(entry, dict) or not isinstance(entry.get("cell_id"), str):
                raise BenchError(f"{self.path}:{lineno} is not an outbox entry (a JSON object with a string "
                                 "cell_id); fix or remove that line")
            out[entry["cell_id"]] = entry
        return list(out.values())

    def __len__(self) -> int:
        return len(self.entries())

    def _rewrite(self, entries: list[dict[str, Any]]) -> None:
        if entries:
            atomic_write_text(self.path, "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries))
        else:
            self.path.unlink(missing_ok=True)

    def add(self, record: dict[str, Any], params: dict[str, Any]) -> None:
        """Queue a cell's payload (replacing an older one of the same cell)."""
        entry = {"cell_id": record["cell_id"], "experiment": self.grid, "record": record, "params": params,
                 "queued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        with file_lock(self.path):
            self._rewrite([e for e in self.entries() if e["cell_id"] != entry["cell_id"]] + [entry])

    def remove(self, cell_id: str) -> None:
        with file_lock(self.path):
            entries = self.entries()
            if any(e["cell_id"] == cell_id for e in entries):
                self._rewrite([e for e in entries if e["cell_id"] != cell_id])
        self.sample_path(cell_id).unlink(missing_ok=True)

    def sample_path(self, cell_id: str) -> Path:
        return self.samples / f"{cell_id}.png"

    def save_sample(self, cell_id: str, pair: Any) -> None:
        """Keep the clean-vs-adversarial image of a queued cell for the replay."""
        from bench.core.cache import disk_error
        from bench.track.tracker import save_sample_png

        path = self.sample_path(cell_id)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_sample_png(*pair, path)
        except OSError as exc:
            raise (disk_error(path, exc) or exc) from None


def drop_stale(box: Outbox) -> int:
    """Drop queued payloads whose record never reached the results (and no live run claims)."""
    from bench.core.locks import CellClaim
    from bench.track.results import ResultStore

    records = ResultStore(box.path.parent / f"{box.grid}.jsonl").records
    dropped = 0
    for entry in box.entries():
        rec = records.get(entry["cell_id"])
        if rec is not None and rec.get("finished_at") == entry["record"].get("finished_at"):
            continue
        claim = CellClaim(box.path.parent, box.grid, entry["cell_id"])
        if claim.acquire():
            box.remove(entry["cell_id"])
            dropped += 1
            claim.release()
    return dropped


def drain(box: Outbox, tracker: Any) -> tuple[int, int, int]:
    """Mirror every queued payload through ``tracker`` (removing each once logged) until one fails;
    returns (replayed, dropped, left).

    An entry whose record never reached the results (a kill between the two writes) is dropped:
    MLflow mirrors the results, nothing else. Entries of a cell another live run has claimed are
    left alone: that run is writing or mirroring it right now."""
    from bench.core.locks import CellClaim
    from bench.track.results import ResultStore

    records = ResultStore(box.path.parent / f"{box.grid}.jsonl").records
    done = dropped = 0
    entries = box.entries()
    for i, entry in enumerate(entries):
        cid = entry["cell_id"]
        claim = CellClaim(box.path.parent, box.grid, cid)
        if not claim.acquire():
            continue
        try:
            rec = records.get(cid)
            if rec is None or rec.get("finished_at") != entry["record"].get("finished_at"):
                box.remove(cid)
                dropped += 1
                continue
            png = box.sample_path(cid)
            if not tracker.mirror(entry["record"], entry["params"], png=png if png.is_file() else None):
                return done, dropped, len(entries) - i
            box.remove(cid)
            done += 1
        finally:
            claim.release()
    return done, dropped, 0


def replay(results_dir: Path, grid: str, uri: str | None, retry_s: float | None = None,
           verbose: bool = False) -> tuple[int, int]:
    """``bench track``: mirror the outbox into MLflow under a parent run ``<grid> sync``; returns
    (replayed, dropped). Raises BenchError (one line) when the store is unreachable or fails again;
    what was replayed stays replayed."""
    from bench.track.tracker import Tracker

    box = Outbox(results_dir, grid)
    dropped = drop_stale(box)
    if not box.entries():
        return 0, dropped
    with Tracker(grid, uri, tags={"kind": "sync"}, run_name=f"{grid} sync", retry_s=retry_s, verbose=verbose,
                 warn=lambda line: None) as tracker:
        done, more, left = drain(box, tracker)
    dropped += more
    if left:
        raise BenchError(f"tracking store {tracker.uri} failed again ({tracker.degraded}); {done} cells "
                         f"replayed, {left} stay in {box.path}; run `bench track` again later")
    return done, dropped

