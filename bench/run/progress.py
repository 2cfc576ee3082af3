"""What a run shows while it runs: on a terminal, tqdm bars for the grid (naming the cell that is
running) and inside each cell (crafting, D' builds, RMC / RIDE streams, through bench.core.progress);
elsewhere (a log file, CI, a ``--jobs`` worker's pipe) no bar, one line per finished cell."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

from tqdm.auto import tqdm

from bench.core import progress

#: Seconds a step runs before its bar appears: short steps (a one-batch attack) never flicker.
DELAY_S = 1.0


def on_terminal() -> bool:
    """Bars only where a person watches: stderr is a terminal."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def tqdm_task(desc: str, total: int, unit: str) -> Any:
    """A bar under the grid's, gone when the step ends (``leave=False``)."""
    return tqdm(total=total, desc=desc, unit=unit, leave=False, delay=DELAY_S, dynamic_ncols=True)


@contextlib.contextmanager
def cell_bars(enabled: bool) -> Iterator[None]:
    """In the block, the steps of a cell draw tqdm bars when ``enabled`` and on a terminal."""
    if not (enabled and on_terminal()):
        yield
        return
    previous = progress.set_reporter(tqdm_task)
    try:
        yield
    finally:
        progress.set_reporter(previous)


def grid_bar(name: str, total: int, enabled: bool) -> Any:
    """The grid's bar: cells done out of ``total``; its postfix names the cell that is running
    (``running``). Drawn on a terminal only; the runner prints one line per finished cell either way."""
    return tqdm(total=total, desc=f"grid {name}", unit="cell", disable=not enabled or not on_terminal(),
                dynamic_ncols=True)


def running(bar: Any, key: str) -> None:
    """Name the cell that starts now on the grid bar."""
    bar.set_postfix_str(key, refresh=True)
