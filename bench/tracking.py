"""MLflow tracking: one experiment per grid, a parent run per invocation, a nested run per cell.

The default store is the embedded ``sqlite:///mlflow.db`` in the working folder unless
``--tracking-uri`` / ``MLFLOW_TRACKING_URI`` names another.
"""

from __future__ import annotations

import logging
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import torch

from bench.errors import BenchError

DEFAULT_URI = "sqlite:///mlflow.db"


def tracking_uri(uri: str | None = None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def save_sample_png(x: torch.Tensor, x_adv: torch.Tensor, path: Path, n: int = 8) -> None:
    """Top row clean, bottom row adversarial; small images are upscaled to at least 32 px."""
    from torchvision.utils import save_image

    pair = torch.cat([x[:n], x_adv[:n]]).detach().float().cpu()
    if pair.shape[-1] < 32:
        pair = torch.nn.functional.interpolate(pair, scale_factor=32 // pair.shape[-1], mode="nearest")
    save_image(pair, path, nrow=min(n, len(x)), padding=2, pad_value=0.5)


def interval_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The record's 95% intervals (``clean_ci``, ``robust_ci``: [low, high]) as scalar metrics."""
    out = {}
    for key in ("clean_ci", "robust_ci"):
        ci = record.get(key)
        if isinstance(ci, (list, tuple)) and len(ci) == 2:
            out[f"{key}_low"], out[f"{key}_high"] = float(ci[0]), float(ci[1])
    return out


def log_leaderboard(grid: str, files: list[Path], uri: str | None = None) -> None:
    """The published leaderboard (Markdown and pictures) as artifacts of a run in the grid's experiment."""
    import mlflow

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    mlflow.set_tracking_uri(tracking_uri(uri))
    mlflow.set_experiment(grid)
    with mlflow.start_run(run_name=f"{grid} leaderboard", tags={"kind": "leaderboard"}):
        for f in files:
            mlflow.log_artifact(str(f), artifact_path="leaderboard")


class Tracker:
    """Context manager around one invocation's MLflow parent run. ``enabled=False`` logs nothing."""

    def __init__(self, grid: str, uri: str | None = None, enabled: bool = True,
                 tags: dict[str, str] | None = None) -> None:
        self.grid, self.uri, self.enabled = grid, tracking_uri(uri), enabled
        self.tags = tags or {}
        self._mlflow: Any = None

    def __enter__(self) -> Tracker:
        if not self.enabled:
            return self
        if self.uri.startswith("http"):
            # Fail in seconds, not after minutes of retries, when the server is unreachable.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        import mlflow

        # mlflow configures its loggers on import; quiet them afterwards (table creation, new experiment).
        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)

        self._mlflow = mlflow
        try:
            mlflow.set_tracking_uri(self.uri)
            mlflow.set_experiment(self.grid)
            mlflow.start_run(run_name=f"{self.grid} invocation", tags={**self.base_tags(), **self.tags})
        except Exception as exc:
            raise BenchError(f"MLflow tracking store {self.uri} is unusable ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:150] if str(exc) else ''}); start the server, "
                             "pass another --tracking-uri, or use --no-tracking") from None
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._mlflow is not None:
            self._mlflow.end_run(status="FINISHED" if exc_type is None else "FAILED")

    @staticmethod
    def base_tags() -> dict[str, str]:
        from bench.runner import code_version

        return {"code_version": code_version(), "torch_version": torch.__version__,
                "python": platform.python_version()}

    def log_cell(self, record: dict[str, Any], params: dict[str, Any],
                 sample: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        if self._mlflow is None:
            return
        mlflow = self._mlflow
        metrics = {k: float(v) for k, v in record.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("seed", "n", "eps")}
        metrics.update(interval_metrics(record))
        tags = {k: str(record[k]) for k in ("status", "device", "code_version", "config_hash", "cell_id",
                                            "threat", "error") if record.get(k) not in (None, "")}
        tags["torch_version"] = torch.__version__
        flat = {k: str(v)[:500] for k, v in params.items()}
        self.drop_cell_runs(record["cell_id"])
        with mlflow.start_run(run_name=record["key"], nested=True, tags=tags):
            mlflow.log_params(flat)
            mlflow.log_metrics(metrics)
            if sample is not None:
                with tempfile.TemporaryDirectory() as tmp:
                    png = Path(tmp) / "clean_vs_adversarial.png"
                    save_sample_png(*sample, png)
                    mlflow.log_artifact(str(png))

    def drop_cell_runs(self, cell_id: str) -> int:
        """Delete earlier runs of this cell in the experiment (a failed attempt, or one logged just
        before a kill, so never written to the results), so MLflow keeps one run per cell."""
        mlflow = self._mlflow
        run = mlflow.active_run()
        if run is None:
            return 0
        client = mlflow.tracking.MlflowClient()
        old = client.search_runs([run.info.experiment_id], filter_string=f"tags.cell_id = '{cell_id}'",
                                 max_results=1000)
        for r in old:
            client.delete_run(r.info.run_id)
        return len(old)

    def log_training(self, name: str, params: dict[str, Any], history: list[dict[str, float]]) -> None:
        """A nested run for one trained model, with per-epoch loss and accuracy."""
        if self._mlflow is None:
            return
        mlflow = self._mlflow
        with mlflow.start_run(run_name=f"train {name}", nested=True, tags={"kind": "training"}):
            mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
            for row in history:
                step = int(row["epoch"])
                mlflow.log_metrics({k: float(v) for k, v in row.items() if k != "epoch"}, step=step)
