"""The default executor: cells one after another in this process (bench.run.executors has Ray's)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from bench.spec.grid import Cell

if TYPE_CHECKING:  # a finished grid's `bench run` stays torch-free
    import torch


class CellRunner(Protocol):
    """What an executor needs of the runner (bench.run.runner.Runner implements it)."""

    device: torch.device

    def setup(self) -> None: ...

    def run_cell(self, cell: Cell) -> dict[str, Any]: ...

    def sample(self, cell: Cell, record: dict[str, Any]) -> Any: ...


class LocalExecutor:
    """Cells one after another in this process."""

    name = "local"

    def start(self, runner: CellRunner) -> None:
        runner.setup()

    def device_label(self, runner: CellRunner) -> str:
        return str(runner.device)

    def run(self, runner: CellRunner, cells: Any) -> Iterator[tuple[Cell, dict[str, Any], Any]]:
        for cell in cells:
            record = runner.run_cell(cell)
            yield cell, record, runner.sample(cell, record)
