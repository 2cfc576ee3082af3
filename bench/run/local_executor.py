"""The default executor: cells one after another in this process (bench.run.executors has Ray's)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.run.runner import Runner
    from bench.spec.grid import Cell


class LocalExecutor:
    """Cells one after another in this process."""

    name = "local"

    def start(self, runner: Runner) -> None:
        runner.setup()

    def device_label(self, runner: Runner) -> str:
        return str(runner.device)

    def run(self, runner: Runner, cells: Any) -> Iterator[tuple[Cell, dict[str, Any], Any]]:
        for cell in cells:
            record = runner.run_cell(cell)
            yield cell, record, runner.sample(cell, record)
