"""Shared helpers for benchmark scripts: timing and writing figures to results/benchmarks/."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import torch

from bench.core.cache import atomic_write_text
from bench.core.timing import best_time, sync

__all__ = ["best_time", "cpu_model", "sync", "write_figures"]


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), so a figure says which box it came from: sessions here
    have run on more than one kind of 2-core machine, with wall times about 2.7x apart."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def write_figures(name: str, figures: dict[str, Any], out_dir: Path = Path("results/benchmarks")) -> Path:
    meta = {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "threads": torch.get_num_threads()}
    path = out_dir / f"{name}.json"
    atomic_write_text(path, json.dumps({**meta, **figures}, indent=2) + "\n")
    return path
