"""Evaluate your own model from Python: ``bench.evaluate(model, dataset=..., attacks=[...])``.

It builds a one-model grid and runs it through the same runner, audit and cache as ``bench run``,
so its records have the fields of ``results/<grid>.jsonl``. RobustBench's ``benchmark(model)``,
foolbox and ART take any ``nn.Module`` the same way.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from bench.core.errors import BenchError

COLUMNS = ["train_defense", "runtime_defense", "attack", "threat", "norm", "eps", "n", "clean_acc", "robust_acc",
           "attack_success_rate", "max_perturbation", "mean_l2", "mean_rho2", "seconds", "status", "error"]
MODEL_NAME = "model"


def _attack_entry(a: str | dict[str, Any], eps: float | list[float] | None) -> dict[str, Any]:
    entry = {"name": a} if isinstance(a, str) else dict(a)
    if not isinstance(entry.get("name"), str):
        raise BenchError(f"attack {a!r}: give a name ('pgd') or a table {{'name': 'pgd', 'eps': 0.03, ...}}")
    if "eps" not in entry and eps is not None:
        import attacks

        if not attacks.ATTACKS.get(entry["name"]).minimal_norm:
            entry["eps"] = eps
    return entry


def worst_case_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per runtime defense and (norm, eps) budget: the share of examples that survive every attack
    of that budget (an AND over per-example outcomes, never an average)."""
    from bench.report.leaderboard import worst_case

    groups: dict[tuple[str, str, str, float], list[dict[str, Any]]] = {}
    for r in records:
        if r.get("status") == "ok" and r.get("eps") is not None:
            groups.setdefault((r["train_defense"], r["runtime_defense"], r["norm"], r["eps"]), []).append(r)
    rows = []
    for (train, runtime, norm, eps), recs in groups.items():
        acc = worst_case([r["per_example"] for r in recs])
        rows.append({"train_defense": train, "runtime_defense": runtime, "attack": "worst case", "threat": "all",
                     "norm": norm, "eps": eps, "n": recs[0]["n"], "clean_acc": recs[0]["clean_acc"],
                     "robust_acc": None if acc is None else round(acc, 6), "status": "ok", "error": ""})
    return rows


def evaluate(model: nn.Module, dataset: str = "cifar10", attacks: list[str | dict[str, Any]] | None = None,
             runtime: list[str | dict[str, Any]] | None = None, eps: float | list[float] | None = None,
             limit: int | None = None, device: str = "auto", data_dir: str | Path | None = None,
             tracking: bool = False, tracking_uri: str | None = None, results_dir: str | Path | None = None,
             cache_dir: str | Path | None = None, seed: int = 0, progress: bool = True) -> pd.DataFrame:
    """Attack ``model`` (images in [0, 1] -> logits) on ``dataset``'s test split; one row per cell,
    then one "worst case" row per runtime defense and budget.

    ``attacks``: names or tables (``{"name": "pgd", "eps": 8/255, "params": {"steps": 20},
    "threat": "base"}``; default PGD); ``eps`` fills in the budget of ball attacks that give none.
    ``runtime``: runtime defenses, names or ``{"name": "deepnn", "params": {...}}`` (default none;
    nearest-neighbour defenses also read the training split). Results go to ``results_dir`` (default:
    a temporary folder), so a second call with the same arguments and folder skips finished cells.
    """
    from bench.core.cache import default_cache_dir
    from bench.run.runner import Runner, RunOptions
    from bench.spec import grid as grids
    from defenses.database import model_fingerprint

    if not isinstance(model, nn.Module):
        raise BenchError(f"evaluate() takes a torch.nn.Module, got {type(model).__name__}")
    runtime_tables: dict[str, dict[str, Any]] = {}
    for r in runtime or ["none"]:
        name, params = (r, {}) if isinstance(r, str) else (r.get("name"), dict(r.get("params", {})))
        if not isinstance(name, str):
            raise BenchError(f"runtime defense {r!r}: give a name or {{'name': ..., 'params': {{...}}}}")
        runtime_tables[name] = params
    raw = {"name": f"evaluate-{model_fingerprint(model)[:8]}", "dataset": dataset, "layout": "cross",
           "train": {MODEL_NAME: {"source": "object", "sha256": model_fingerprint(model),
                                  "class": f"{type(model).__module__}.{type(model).__qualname__}"}},
           "runtime": runtime_tables, "attacks": [_attack_entry(a, eps) for a in (attacks or ["pgd"])],
           "seed": seed}
    if limit is not None:
        raw["limit"] = limit
    spec = grids.parse(raw, default_name=raw["name"])
    with tempfile.TemporaryDirectory(prefix="bench-evaluate-") as tmp:
        opts = RunOptions(data_dir=Path(data_dir) if data_dir else None,
                          cache_dir=Path(cache_dir) if cache_dir else default_cache_dir(),
                          results_dir=Path(results_dir) if results_dir else Path(tmp), tracking_uri=tracking_uri,
                          tracking=tracking, device=device, progress=progress, log_samples=tracking,
                          provided_models={MODEL_NAME: model})
        runner = Runner(spec, opts)
        runner.run()
        wanted = {c.cell_id for c in runner.cells}
        records = [r for r in runner.store.records.values() if r.get("cell_id") in wanted]
    rows = [{k: r.get(k) for k in COLUMNS} | {"per_example": r.get("per_example")} for r in records]
    rows += worst_case_rows(records)
    return pd.DataFrame(rows, columns=[*COLUMNS, "per_example"])
