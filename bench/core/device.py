"""Device policy: ``auto`` picks CUDA when present, else CPU."""

from __future__ import annotations

import functools

import torch

from bench.core.errors import BenchError


def resolve(device: str | torch.device | None = "auto") -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise BenchError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BenchError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    return dev


def describe(device: str | torch.device) -> str:
    """The hardware behind ``device`` in words (the GPU's name, else the CPU's model name), so a
    record and a board can say which machine a figure came from."""
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(dev)
    return cpu_name()


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux) or platform, with its logical core count."""
    import os
    import platform

    name = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    name = " ".join((name or platform.processor() or platform.machine() or "unknown CPU").split())
    return f"{name}, {os.cpu_count() or '?'} logical cores"
