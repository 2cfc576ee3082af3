"""File names that come from grid files, and the paths built from them.

A grid's name, its figures' names and the like become file names under results/, leaderboards/ and
the cache. They must match one pattern (``check_name``), and every path the harness writes from one
is built with ``inside``, which refuses a path that would leave its folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from bench.core.errors import BenchError

#: Letters, digits and ``. - _ @``, not starting with a dot (no hidden files, no ``..``).
NAME_PATTERN = re.compile(r"[A-Za-z0-9_@-][A-Za-z0-9._@-]{0,99}")
NAME_RULE = "use 1 to 100 letters, digits, '.', '-', '_' or '@', not starting with a dot"


def check_name(name: object, what: str) -> str:
    """``name`` when it is a safe file name, else a one-line BenchError naming ``what`` it is."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise BenchError(f"{what} {name!r} cannot be a file name: {NAME_RULE}"[:400])
    return name


def inside(folder: str | os.PathLike[str], *parts: str) -> Path:
    """``folder / parts``, refused with a one-line BenchError when it would not stay under
    ``folder`` (an absolute part, ``..``, a NUL byte). A lexical check: links are not followed."""
    base = os.path.normpath(os.fspath(folder))
    path = os.path.normpath(os.path.join(base, *parts))
    if "\x00" in path or os.path.isabs(os.path.join("", *parts)) or \
            os.path.relpath(path, base).split(os.sep)[0] in (os.curdir, os.pardir):
        raise BenchError(f"refusing to write {os.path.join(*parts)!r}: it would leave the folder {base}"[:400])
    return Path(folder).joinpath(*parts)
