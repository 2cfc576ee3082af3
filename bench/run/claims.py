"""Which planned cells this process runs: each cell is claimed (bench.core.locks.CellClaim) before it
runs, so runs sharing a results folder (a second ``bench run``, the workers of ``--jobs``) split the work
instead of computing a cell twice."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from bench.core.locks import CellClaim
from bench.spec.grid import Cell
from bench.track.results import ResultStore


class CellClaims:
    """The claims this process holds on one grid's cells, and the counts of cells it left to others."""

    def __init__(self, store: ResultStore, grid: str, announce: bool = True) -> None:
        """``announce``: say on the console when another run holds a cell (not for --jobs' own workers)."""
        self.store, self.grid, self.announce = store, grid, announce
        self.folder: Path = store.path.parent
        self.held: dict[str, CellClaim] = {}
        self.elsewhere = 0  # cells another live run was computing
        self.finished_elsewhere = 0  # cells another run finished after this one planned
        self._seen: set[str] = set()

    def _acquire(self, cell: Cell) -> bool | None:
        """True: claimed now; False: another run holds it; None: another run finished it meanwhile."""
        claim = CellClaim(self.folder, self.grid, cell.cell_id)
        if not claim.acquire():
            return False
        self.store.reload()
        if self.store.finished(cell.cell_id):
            claim.release()
            return None
        self.held[cell.cell_id] = claim
        return True

    def reserve(self, cell: Cell) -> bool:
        """Claim a later cell now: a batched stream computes it ahead of its turn (bench.run.stream_batch)."""
        return cell.cell_id in self.held or bool(self._acquire(cell))

    def take(self, order: Iterable[Cell]) -> Iterator[Cell]:
        """The cells of ``order`` this process claims, lazily (one claim at a time, as each is reached)."""
        for cell in order:
            if cell.cell_id in self._seen:  # the same cell listed twice in the grid
                continue
            self._seen.add(cell.cell_id)
            if cell.cell_id in self.held:  # reserved for a batched stream
                yield cell
                continue
            got = self._acquire(cell)
            if got is False:
                self.elsewhere += 1
                if self.announce:
                    tqdm.write(f"skip {cell.key}: another run is computing it")
            elif got is None:
                self.finished_elsewhere += 1
            else:
                yield cell

    def release(self, cell_id: str) -> None:
        self.held.pop(cell_id).release()

    def release_all(self) -> None:
        for claim in self.held.values():
            claim.release()
        self.held.clear()

    def __enter__(self) -> CellClaims:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release_all()
