"""Arrays stored out of core as ``.npy`` shards in one folder, read back memory-mapped.

A shard is written under a temporary name and renamed into place (atomic), then recorded with its row
count and sha256 in ``manifest.json`` (rewritten atomically too): a killed writer leaves at most a stray
temporary file, never a half shard in the manifest, and a resumed job skips the shards listed there.
``ShardedArray`` reads rows across shards by slice or by an index array, without loading the rest.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from bench.core.cache import file_sha256

MANIFEST = "manifest.json"


def read_manifest(folder: Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    if not path.exists():
        return {"meta": {}, "shards": {}}
    return json.loads(path.read_text())


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    tmp = Path(folder) / f".{MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, Path(folder) / MANIFEST)


def init_folder(folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Open (or create) a shard folder for ``meta``; shards written for a different ``meta`` are dropped."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(folder)
    if manifest.get("meta") != meta:
        for name in manifest.get("shards", {}):
            (folder / name).unlink(missing_ok=True)
        manifest = {"meta": meta, "shards": {}}
        _write_manifest(folder, manifest)
    return manifest


def write_array(path: Path, array: np.ndarray) -> str:
    """Write ``array`` as the ``.npy`` file ``path`` atomically (temporary name, fsync, rename); its sha256."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    digest = file_sha256(tmp)
    os.replace(tmp, path)
    return digest


def write_shard(folder: Path, name: str, array: np.ndarray, key: str | None = None) -> str:
    """Write ``array`` as ``folder/name`` and record it in the manifest (under ``key``, default ``name``);
    returns its sha256. One manifest writer per folder at a time (a job's driver records its shards)."""
    digest = write_array(Path(folder) / name, array)
    record_shard(folder, key or name, {"file": name, "rows": int(array.shape[0]), "sha256": digest})
    return digest


def record_shard(folder: Path, key: str, entry: dict[str, Any]) -> None:
    manifest = read_manifest(folder)
    manifest["shards"][key] = entry
    _write_manifest(folder, manifest)


def done_shards(folder: Path) -> dict[str, Any]:
    """The shards a (possibly killed) job finished: listed in the manifest and present on disk."""
    folder = Path(folder)
    return {k: v for k, v in read_manifest(folder).get("shards", {}).items() if (folder / v["file"]).exists()}


class ShardedArray:
    """Read-only rows of several memory-mapped ``.npy`` files, as one (N, ...) array."""

    def __init__(self, paths: list[Path]) -> None:
        self.parts = [np.load(p, mmap_mode="r") for p in paths]
        if not self.parts:
            raise ValueError("no shards")
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])
        self.shape = (int(self.offsets[-1]), *self.parts[0].shape[1:])
        self.dtype = self.parts[0].dtype

    @classmethod
    def from_manifest(cls, folder: Path, keys: list[str]) -> ShardedArray:
        shards = read_manifest(folder)["shards"]
        return cls([Path(folder) / shards[k]["file"] for k in keys])

    def __len__(self) -> int:
        return self.shape[0]

    def nbytes(self) -> int:
        return int(sum(p.nbytes for p in self.parts))

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                return self[np.arange(start, stop, step)]
            out = []
            for i, part in enumerate(self.parts):
                lo, hi = max(start, self.offsets[i]), min(stop, self.offsets[i + 1])
                if lo < hi:
                    out.append(part[lo - self.offsets[i] : hi - self.offsets[i]])
            return np.concatenate(out) if len(out) != 1 else np.asarray(out[0])
        ids = np.asarray(key)
        if ids.ndim == 0:
            return self[ids.reshape(1)][0]
        flat = ids.reshape(-1).astype(np.int64)
        out = np.empty((flat.size, *self.shape[1:]), dtype=self.dtype)
        which = np.searchsorted(self.offsets, flat, side="right") - 1
        for i in np.unique(which):
            sel = which == i
            out[sel] = self.parts[i][flat[sel] - self.offsets[i]]
        return out.reshape(*ids.shape, *self.shape[1:])
