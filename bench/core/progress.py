"""Progress of the long steps inside a cell, through one hook that the harness sets.

Methods report work as it is done with ``task(desc, total)``: crafting batch by batch (the Attack
contract), a D' build copy by copy or shard by shard, an RMC or RIDE stream point by point. They never
draw anything themselves: the harness installs a reporter (``set_reporter``; bench.run.progress draws
tqdm bars on a terminal). The default reporter does nothing, so a method used as a library, in a Ray
task or in a ``bench run --jobs`` worker stays silent.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, TypeVar

T = TypeVar("T")


class Task(Protocol):
    """One step's progress: ``update(n)`` when n more units are done."""

    def update(self, n: int = 1) -> object: ...

    def close(self) -> None: ...


#: ``reporter(desc, total, unit)`` -> a Task for one step.
Reporter = Callable[[str, int, str], Task]


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


_SILENT = _Silent()
_reporter: Reporter | None = None


def set_reporter(reporter: Reporter | None) -> Reporter | None:
    """Install ``reporter`` (None: silent) for every later ``task``; returns the previous one."""
    global _reporter
    previous, _reporter = _reporter, reporter
    return previous


@contextlib.contextmanager
def task(desc: str, total: int, unit: str = "pt") -> Iterator[Task]:
    """A step of ``total`` units (``unit``: "pt" points, "shard", ...), reported to the installed
    reporter; closed when the block ends, however it ends."""
    bar = _reporter(desc, int(total), unit) if _reporter is not None else _SILENT
    try:
        yield bar
    finally:
        bar.close()


def steps(items: Sequence[T], desc: str, unit: str = "pt") -> Iterator[T]:
    """``items`` one by one, each counted as done once the loop body that took it has run."""
    with task(desc, len(items), unit) as bar:
        for item in items:
            yield item
            bar.update(1)
