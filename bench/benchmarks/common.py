"""Shared helpers for benchmark scripts: timing and writing figures to results/benchmarks/."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import torch

from bench.core.cache import atomic_write_text
from bench.core.timing import best_time, sync

__all__ = ["best_time", "cpu_model", "pretrained_resnet32", "sync", "write_figures"]

#: akamaster's pretrained CIFAR-10 ResNet-32, relative to a weights folder ($BENCH_WEIGHTS_DIR).
RESNET32 = "cifar10-resnet/resnet32-d509ac18.th"


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


def pretrained_resnet32(weights_dir: str | Path | None = None) -> torch.nn.Module:
    """The pretrained CIFAR-10 ResNet-32 from ``weights_dir`` (default: $BENCH_WEIGHTS_DIR), in eval
    mode on the CPU, loaded with ``weights_only=True``."""
    import os

    from bench.core import models

    folder = weights_dir if weights_dir is not None else os.environ.get("BENCH_WEIGHTS_DIR", "")
    return models.load("resnet32", str(Path(folder) / RESNET32)).eval()
