"""Peak memory of a piece of work: CPU resident set (Linux VmHWM) and CUDA max allocated.

``reset()`` before, ``peak()`` after. On Linux the RSS high-water mark is reset by writing 5 to
/proc/self/clear_refs; where that is not possible the process-lifetime peak (getrusage) is reported.
"""

from __future__ import annotations

import contextlib
import resource
import sys
from pathlib import Path


def reset() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _rss_peak_mb() -> float:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 1024**2  # KiB on Linux, bytes on macOS
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def peak() -> dict[str, float]:
    """``peak_rss_mb`` and, on CUDA, ``peak_cuda_mb`` since the last ``reset()``."""
    out = {"peak_rss_mb": round(_rss_peak_mb(), 1)}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out
