"""What a user chooses for one run of a grid (command-line options and their Python equivalents)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.core.cache import default_cache_dir


@dataclass
class RunOptions:
    data_dir: Path | None = None
    cache_dir: Path = field(default_factory=default_cache_dir)
    results_dir: Path = Path("results")
    tracking_uri: str | None = None
    tracking: bool = True
    device: str = "auto"
    limit: int | None = None
    seed: int | None = None
    download: bool = False
    progress: bool = True
    log_samples: bool = True
    #: Seeded stand-ins of the dataset's shape for splits whose files are missing (smoke runs).
    synthetic: bool = False
    #: "full", or "smoke" (bench.spec.smoke): tagged in MLflow.
    budget: str = "full"
    #: Models passed from Python (bench.evaluate), by train-time entry name (source = "object").
    provided_models: dict[str, torch.nn.Module] = field(default_factory=dict)
    verbose: bool = False
    #: (rank, count) when this process is one of ``bench run --jobs`` workers (bench.run.workers).
    worker: tuple[int, int] | None = None
    #: The MLflow parent run this process nests its cells under, opened by another (``--jobs``'s
    #: main process); None: this process opens and ends its own.
    parent_run_id: str | None = None
    #: RMC streams run together per batch (bench.run.stream_batch); None: 16 on a GPU, 1 (off) on a CPU.
    stream_batch: int | None = None
