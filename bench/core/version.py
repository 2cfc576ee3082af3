"""The code version that every record carries."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

#: The package version (``bench.__version__`` is this one).
__version__ = "0.1.0"


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """Package version plus the git commit when run from a checkout."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__
