"""D' for the nearest-neighbour defenses: D plus adversarial copies of D, and deep features of both.

``build_database`` makes ``copies`` adversarial copies of each training example against the fixed
model with one or several registered attacks (RMC paper Table 6: Single-Attack = one name, All-In =
all names, Leave-One-Out = all but one), cycling through the list, each copy with its own seed. The
result (images stored as uint8, a 4x smaller file; rounding moves a pixel by at most 1/510) and the
features of the fixed model are cached by the hash of everything that determines them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.core import progress
from bench.core.cache import atomic_torch_save, config_hash, default_cache_dir, torch_load_or_none
from bench.core.data import Dataset

#: Counts how often D', features of its adversarial rows and features of D itself were really computed
#: (tests assert the caches skip the work).
BUILD_COUNTER = {"database": 0, "features": 0, "clean_features": 0}


@dataclass
class Database:
    x: torch.Tensor  # float [0, 1] images
    y: torch.Tensor  # int64 labels
    is_adv: torch.Tensor  # bool: adversarial copy (True) or clean example of D (False)
    features: torch.Tensor  # (N, d) float32 features of the fixed model


def model_fingerprint(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def dataset_fingerprint(ds: Dataset) -> str:
    h = hashlib.sha256(f"{ds.name}/{ds.split}/{len(ds)}".encode())
    h.update(ds.x[:: max(1, len(ds) // 256)].contiguous().numpy().tobytes())
    h.update(ds.y.numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def _forward_features(model: nn.Module, x: torch.Tensor, layer: str | None, batch_size: int = 512) -> torch.Tensor:
    from bench.core.models import layer_features

    device = next(model.parameters()).device
    return torch.cat([layer_features(model, x[i : i + batch_size].to(device), layer).float().cpu()
                      for i in range(0, len(x), batch_size)])


def compute_features(model: nn.Module, x: torch.Tensor, batch_size: int = 512,
                     layer: str | None = None) -> torch.Tensor:
    """The fixed model's searched features of x, computed now."""
    BUILD_COUNTER["features"] += 1
    return _forward_features(model, x, layer, batch_size)


def clean_features(model: nn.Module, train_set: Dataset, layer: str | None = None, quantised: bool = True,
                   cache_dir: str | Path | None = None) -> torch.Tensor:
    """Features of D's own images, computed once per (model, D, layer) and cached on disk: every D' on
    the same model and D (one per attack under ``db_attacks = "per-attack"``, RMC, RMC+ and WebNN alike)
    and DeepNN's clean database share them. ``quantised``: of the uint8-rounded images D' stores (DeepNN
    searches D at full precision). Each row's features do not depend on the rows batched with it
    (checked on ResNet-32: bit-identical), so D' rows computed apart equal rows computed together."""
    key = config_hash({"model": model_fingerprint(model), "data": dataset_fingerprint(train_set), "layer": layer,
                       "quantised": quantised})
    path = Path(cache_dir or default_cache_dir()) / "features" / f"{key}.pt"
    cached = torch_load_or_none(path)
    if cached is not None:
        return cached
    BUILD_COUNTER["clean_features"] += 1
    x = _to_uint8(train_set.x).float() / 255 if quantised else train_set.x
    feats = _forward_features(model, x, layer)
    atomic_torch_save(feats, path)
    return feats


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round().clamp(0, 255).to(torch.uint8)


def attack_params_for(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """The D' attack ``name``'s parameters: the shared ones (eps, steps, ...) overlaid with its own table,
    if any (``db_params = { eps = 0.03, jsma = { max_iters = 20 } }``: a budget only one attack of a mix
    accepts)."""
    shared = {k: v for k, v in params.items() if not isinstance(v, dict)}
    own = params.get(name)
    return {**shared, **(own if isinstance(own, dict) else {})}


def build_database(model: nn.Module, train_set: Dataset, copies: int = 1, attack_names: list[str] | None = None,
                   attack_params: dict[str, Any] | None = None, seed: int = 0, cache_dir: str | Path | None = None,
                   batch_size: int = 256, layer: str | None = None) -> Database:
    """D' = D plus ``copies`` adversarial copies of D (see module docstring); cached on disk."""
    from bench.core.methods import create_attack

    names = list(attack_names or ["pgd"])
    params = dict(attack_params or {})
    key = config_hash({"model": model_fingerprint(model), "data": dataset_fingerprint(train_set), "copies": copies,
                       "attacks": names, "params": params, "seed": seed,
                       **({} if layer is None else {"layer": layer})})
    path = Path(cache_dir or default_cache_dir()) / "databases" / f"{key}.pt"
    cached = torch_load_or_none(path)
    if cached is not None:
        return Database(cached["x"].float() / 255, cached["y"], cached["is_adv"], cached["features"])
    BUILD_COUNTER["database"] += 1
    device = next(model.parameters()).device
    xs, ys, adv = [train_set.x], [train_set.y], [torch.zeros(len(train_set), dtype=torch.bool)]
    for c in progress.steps(range(copies), "D' build", unit="copy"):
        name = names[c % len(names)]
        atk = create_attack(name, **{**attack_params_for(name, params), "seed": seed * 1000 + c,
                                      "batch_size": batch_size})
        x_adv = atk(model, train_set.x.to(device), train_set.y.to(device)).cpu()
        xs.append(x_adv)
        ys.append(train_set.y)
        adv.append(torch.ones(len(train_set), dtype=torch.bool))
    x8 = _to_uint8(torch.cat(xs))
    x = x8.float() / 255
    feats = clean_features(model, train_set, layer, quantised=True, cache_dir=cache_dir)
    if copies:
        feats = torch.cat([feats, compute_features(model, x[len(train_set):], layer=layer)])
    atomic_torch_save({"x": x8, "y": torch.cat(ys), "is_adv": torch.cat(adv), "features": feats}, path)
    return Database(x, torch.cat(ys), torch.cat(adv), feats)
