"""Model sources other than training: a user's checkpoint, architecture or model object.

In a grid, a train-time entry takes a model instead of training one::

    [train.mine]
    source = "checkpoint"
    arch = "resnet32"                 # a registered architecture, or
    model = "nets.py:LeNet"           # a factory / nn.Module class: "pkg.mod:name" or "file.py:name"
    checkpoint = "lenet.pt"           # weights_only=True; optional when the factory loads its own;
                                      # $VARS expand ("$BENCH_WEIGHTS_DIR/resnet32.th")
    weights = "IMAGENET1K_V1"         # instead of checkpoint, for resnet18/50/152: torchvision's
                                      # weights (torch hub cache, else downloaded; one line offline)
    mean = [0.1307]                   # optional: the model normalises internally,
    std = [0.3081]                    # so attacks always see [0, 1] images

Relative paths resolve against the grid file's folder. The checkpoint's (and a model file's)
sha256 is part of the cell identity and of the cache key, so a changed file is a new model.
This module reads specs only (no torch); bench.run.user_model builds the models.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from bench.core.errors import BenchError
from bench.core.imports import ref_fingerprint

SOURCE_KEYS = {"source", "arch", "model", "checkpoint", "weights", "mean", "std", "model_kwargs", "sha256",
               "model_sha256"}
#: "object": a model passed from Python (bench.evaluate); its key holds the state dict's hash.
SOURCES = ("checkpoint", "object")


def is_provided(params: dict[str, Any]) -> bool:
    """True when a train-time entry names a model source instead of a training method."""
    return "source" in params


def resolve_path(value: str, base_dir: str | Path | None) -> Path:
    """``$VARS`` and ``~`` expanded; relative paths start at ``base_dir`` (the grid file's folder)."""
    p = Path(os.path.expandvars(value)).expanduser()
    return p if p.is_absolute() or base_dir is None else Path(base_dir) / p


def validate(name: str, params: dict[str, Any], where: str) -> None:
    """Check a source entry's keys and types (no file access)."""
    if params.get("source") == "object":
        return
    if params.get("source") != "checkpoint":
        raise BenchError(f"{where}: [train.{name}] source {params.get('source')!r} unknown; use 'checkpoint'")
    unknown = set(params) - SOURCE_KEYS
    if unknown:
        raise BenchError(f"{where}: [train.{name}] unknown keys {', '.join(sorted(unknown))}; "
                         f"valid: {', '.join(sorted(SOURCE_KEYS - {'sha256', 'model_sha256'}))}")
    if ("arch" in params) == ("model" in params):
        raise BenchError(f"{where}: [train.{name}] needs exactly one of arch = \"resnet32\" (registered) "
                         "or model = \"module:factory\"")
    for key in ("arch", "model", "checkpoint", "weights"):
        if key in params and not isinstance(params[key], str):
            raise BenchError(f"{where}: [train.{name}] {key} must be a string, got {params[key]!r}")
    if "arch" in params and ("checkpoint" in params) == ("weights" in params):
        raise BenchError(f"{where}: [train.{name}] a registered arch needs checkpoint = \"path.pt\" "
                         "(or, for resnet18/50/152, weights = \"IMAGENET1K_V1\"), not both")
    if "weights" in params and "arch" not in params:
        raise BenchError(f"{where}: [train.{name}] weights = ... needs arch = \"resnet50\" (a torchvision arch)")
    for key in ("mean", "std"):
        v = params.get(key)
        if v is not None and not (isinstance(v, list) and v and all(
                isinstance(a, (int, float)) and not isinstance(a, bool) for a in v)):
            raise BenchError(f"{where}: [train.{name}] {key} must be a list of numbers, e.g. [0.5, 0.5, 0.5]")
    if ("mean" in params) != ("std" in params):
        raise BenchError(f"{where}: [train.{name}] give both mean and std, or neither")
    if "std" in params and any(float(s) <= 0 for s in params["std"]):
        raise BenchError(f"{where}: [train.{name}] std values must be positive")
    if "model_kwargs" in params and not isinstance(params["model_kwargs"], dict):
        raise BenchError(f"{where}: [train.{name}] model_kwargs must be a table")


def fingerprint(params: dict[str, Any], base_dir: str | Path | None) -> dict[str, Any]:
    """``params`` plus the sha256 of the checkpoint and of a model file: one line when a file is missing."""
    from bench.core.cache import file_sha256

    out = dict(params)
    if "checkpoint" in params:
        path = resolve_path(params["checkpoint"], base_dir)
        unset = re.findall(r"\$\{?(\w+)", os.path.expandvars(params["checkpoint"]))
        if unset:
            raise BenchError(f"checkpoint {params['checkpoint']!r} names {', '.join(unset)}, which is not set: "
                             f"export {unset[0]}=<folder> first")
        if not path.is_file():
            raise BenchError(f"checkpoint {path} not found (named by a [train] entry with source = \"checkpoint\"; "
                             "relative paths start at the grid file's folder)")
        out["sha256"] = file_sha256(path)
    if "model" in params:
        digest = ref_fingerprint(params["model"], base_dir)
        if digest:
            out["model_sha256"] = digest
    return out
