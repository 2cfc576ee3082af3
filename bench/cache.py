"""Config hashing and atomic file writes (temporary file, fsync, rename) for cached artifacts."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from bench.errors import BenchError


def config_hash(config: Any, length: int = 16) -> str:
    """Stable hash of a JSON-serialisable config (dict key order does not matter)."""
    blob = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def default_cache_dir() -> Path:
    env = os.environ.get("BENCH_CACHE_DIR")
    return Path(env) if env else Path(".bench-cache")


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    try:
        _atomic_write(Path(path), lambda f: f.write(data))
    except PermissionError:
        raise BenchError(f"cannot write to {Path(path).parent}: permission denied; choose a writable folder") from None


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_torch_save(obj: Any, path: Path) -> None:
    try:
        _atomic_write(Path(path), lambda f: torch.save(obj, f))
    except PermissionError:
        raise BenchError(f"cannot write to {Path(path).parent}: permission denied; choose a writable folder") from None


def torch_load_or_none(path: Path) -> Any:
    """Load a cached tensor file with weights_only=True; a missing or corrupt entry returns None."""
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        path.unlink(missing_ok=True)  # corrupt or partial: rebuild
        return None
