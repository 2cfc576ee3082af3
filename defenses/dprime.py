"""D' out of core (``database = "disk"``): for ImageNet-sized D' (the RMC paper: N' = 5.1 million images).

Layout, in one shard folder per D' (its name = the hash of everything that determines it): clean entries
are references into the dataset (row i of D' is example i of D, read at the same uint8 precision as the
in-memory D'); adversarial copy c of example i is row i + (c + 1)|D| (the in-memory layout, which RMC+
relies on), stored as uint8 ``(rows, C, H, W)`` shards; the fixed model's features of every row as
float16 shards. Built by a resumable job of one task per shard (``defenses.shards``: atomic writes, a
manifest; a killed job skips the shards it finished). ``map_fn`` is the seam for spreading the tasks
(``bench.run.executors.ray_map`` sends each to a Ray worker); the default is a plain loop.

Seeds: copy c's attack on shard s uses seed ``seed * 1000 + c + 1_000_000 * s`` (shard 0 matches the
in-memory D', whose attack sees all of D in one call), so a shard is the same whichever worker or run
writes it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.core import progress
from bench.core.cache import config_hash, default_cache_dir
from bench.core.data import Dataset
from defenses import shards as sh
from defenses.database import attack_params_for


def _quantise(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round().clamp(0, 255) / 255


def clean_rows(train_set: Dataset, ids: np.ndarray) -> torch.Tensor:
    """Examples ``ids`` of D, decoded on demand (ImageNet files) or indexed (in-memory datasets)."""
    paths = getattr(train_set, "paths", None)
    if paths is not None:
        from bench.core.imagenet import preprocess

        return torch.stack([preprocess(paths[int(i)]) for i in ids]) if len(ids) else torch.empty(0)
    return train_set.x[torch.as_tensor(ids, dtype=torch.long)]


@dataclass(frozen=True)
class Task:
    """One shard: ``copy`` = -1 for D's own rows (features only), else adversarial copy ``copy``."""

    copy: int
    shard: int
    start: int
    stop: int

    @property
    def key(self) -> str:
        return f"{'clean' if self.copy < 0 else f'adv{self.copy}'}-{self.shard:05d}"


def plan(n: int, copies: int, shard_size: int) -> list[Task]:
    ranges = [(s, a, min(n, a + shard_size)) for s, a in enumerate(range(0, n, shard_size))]
    return [Task(c, s, a, b) for c in range(-1, copies) for s, a, b in ranges]


@torch.no_grad()
def _features(model: nn.Module, x: torch.Tensor, layer: str | None, batch_size: int = 256) -> torch.Tensor:
    from bench.core.models import layer_features

    device = next(model.parameters()).device
    return torch.cat([layer_features(model, x[i : i + batch_size].to(device), layer).float().cpu()
                      for i in range(0, len(x), batch_size)])


def run_task(task: Task, folder: str, model: nn.Module, train_set: Dataset, attack_names: list[str],
             attack_params: dict[str, Any], seed: int, layer: str | None, quantise_clean: bool,
             batch_size: int = 256) -> tuple[str, dict[str, Any]]:
    """Compute and write one shard (images for an adversarial copy, features for every shard); returns
    (key, manifest entry). Self-contained, so a Ray worker can run it; the driver records the entry."""
    from bench.core.methods import create_attack

    folder_p = Path(folder)
    ids = np.arange(task.start, task.stop)
    raw = clean_rows(train_set, ids)
    x = _quantise(raw) if quantise_clean else raw
    entry: dict[str, Any] = {"rows": len(ids)}
    if task.copy >= 0:  # attacked from the dataset's own pixels, as the in-memory D' is
        y = train_set.y[task.start : task.stop]
        name = attack_names[task.copy % len(attack_names)]
        seed_c = seed * 1000 + task.copy + 1_000_000 * task.shard
        own = attack_params_for(name, attack_params)
        atk = create_attack(name, **{**own, "seed": seed_c, "batch_size": batch_size})
        device = next(model.parameters()).device
        x8 = (atk(model, raw.to(device), y.to(device)).cpu() * 255).round().clamp(0, 255).to(torch.uint8)
        entry["images"] = f"{task.key}-images.npy"
        entry["images_sha256"] = sh.write_array(folder_p / entry["images"], x8.numpy())
        x = x8.float() / 255
    feats = _features(model, x, layer).numpy().astype(np.float16)
    entry["file"] = f"{task.key}-features.npy"
    entry["sha256"] = sh.write_array(folder_p / entry["file"], feats)
    return task.key, entry


MapFn = Callable[[Callable[..., Any], list[dict[str, Any]]], Iterable[Any]]


def local_map(fn: Callable[..., Any], kwargs_list: list[dict[str, Any]]) -> Iterable[Any]:
    """The default task runner: one task after another in this process, results as they finish."""
    return (fn(**kw) for kw in kwargs_list)


def build_shards(folder: Path, model: nn.Module, train_set: Dataset, copies: int, attack_names: list[str],
                 attack_params: dict[str, Any], seed: int, layer: str | None, meta: dict[str, Any],
                 shard_size: int = 4096, quantise_clean: bool = True, map_fn: MapFn | None = None,
                 stop_after: int | None = None) -> dict[str, Any]:
    """Run the shard tasks not yet in ``folder``'s manifest; returns the manifest's shards. ``stop_after``
    (tests) stops after that many new shards, as a killed job would."""
    sh.init_folder(folder, meta)
    done = sh.done_shards(folder)
    todo = [t for t in plan(len(train_set), copies, shard_size) if t.key not in done]
    common = {"folder": str(folder), "model": model, "train_set": train_set, "attack_names": list(attack_names),
              "attack_params": dict(attack_params), "seed": seed, "layer": layer, "quantise_clean": quantise_clean}
    results = (map_fn or local_map)(run_task, [{"task": t, **common} for t in todo])
    with progress.task("D' build", len(todo) if stop_after is None else min(stop_after, len(todo)), "shard") as bar:
        for key, entry in itertools.islice(results, stop_after):
            sh.record_shard(folder, key, entry)
            bar.update(1)
    return sh.done_shards(folder)


class DiskImages:
    """D''s images, row by row on demand: clean rows from the dataset, adversarial rows from uint8 shards."""

    def __init__(self, train_set: Dataset, adv: sh.ShardedArray | None, copies: int, quantise_clean: bool) -> None:
        self.train_set, self.adv, self.n_clean = train_set, adv, len(train_set)
        self.quantise_clean = quantise_clean
        first = clean_rows(train_set, np.arange(1))
        self.shape = (self.n_clean * (1 + copies), *first.shape[1:])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> torch.Tensor:
        ids = np.arange(len(self))[key] if isinstance(key, slice) else np.asarray(torch.as_tensor(key).cpu())
        flat = ids.reshape(-1)
        out = torch.empty((flat.size, *self.shape[1:]))
        clean = flat < self.n_clean
        if clean.any():
            x = clean_rows(self.train_set, flat[clean])
            out[torch.from_numpy(clean)] = _quantise(x) if self.quantise_clean else x
        if (~clean).any():
            out[torch.from_numpy(~clean)] = torch.from_numpy(self.adv[flat[~clean] - self.n_clean]).float() / 255
        return out.reshape(*ids.shape, *self.shape[1:])


@dataclass
class DiskDatabase:
    """The ``Database`` interface (x, y, is_adv, features) over a shard folder; ``features`` is memory-mapped
    float16 (``feature_rows``), turned into one float32 tensor only when asked for (the flat index)."""

    x: DiskImages
    y: torch.Tensor
    is_adv: torch.Tensor
    feature_rows: sh.ShardedArray
    folder: Path

    @property
    def features(self) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.feature_rows[: len(self.feature_rows)], dtype=np.float32))


def build_disk_database(model: nn.Module, train_set: Dataset, copies: int = 1, attack_names: list[str] | None = None,
                        attack_params: dict[str, Any] | None = None, seed: int = 0,
                        cache_dir: str | Path | None = None, layer: str | None = None, shard_size: int = 4096,
                        quantise_clean: bool = True, map_fn: MapFn | None = None, folder: str | Path | None = None,
                        stop_after: int | None = None) -> DiskDatabase:
    """D' = D plus ``copies`` adversarial copies, out of core (module docstring); resumes a killed build."""
    from defenses.database import dataset_fingerprint, model_fingerprint

    names, params = list(attack_names or ["pgd"]), dict(attack_params or {})
    meta = {"model": model_fingerprint(model), "data": dataset_fingerprint(train_set), "copies": copies,
            "attacks": names, "params": params, "seed": seed, "layer": layer, "shard_size": shard_size,
            "quantise_clean": quantise_clean}
    root = Path(cache_dir or default_cache_dir()) / "databases"
    folder = Path(folder) if folder else root / f"{config_hash(meta)}-disk"
    build_shards(folder, model, train_set, copies, names, params, seed, layer, meta, shard_size, quantise_clean,
                 map_fn, stop_after)
    return open_disk_database(folder, train_set, copies, shard_size, quantise_clean)


def open_disk_database(folder: Path, train_set: Dataset, copies: int, shard_size: int,
                       quantise_clean: bool = True) -> DiskDatabase:
    tasks = plan(len(train_set), copies, shard_size)
    done = sh.done_shards(folder)
    missing = [t.key for t in tasks if t.key not in done]
    if missing:
        from bench.core.errors import BenchError

        raise BenchError(f"D' in {folder} is incomplete ({len(missing)} of {len(tasks)} shards missing); "
                         "run the build again to resume it")
    feats = sh.ShardedArray([folder / done[t.key]["file"] for t in tasks])
    adv_tasks = [t for t in tasks if t.copy >= 0]
    adv = sh.ShardedArray([folder / done[t.key]["images"] for t in adv_tasks]) if adv_tasks else None
    n = len(train_set)
    y = train_set.y.repeat(1 + copies)
    is_adv = torch.arange(n * (1 + copies)) >= n
    return DiskDatabase(DiskImages(train_set, adv, copies, quantise_clean), y, is_adv, feats, Path(folder))
