"""Adversarial-robustness benchmark harness: core (CLI, registry, data, models, runner, tracking)."""

from bench.core.version import __version__

__all__ = ["__version__", "evaluate"]


def __getattr__(name: str):
    """``bench.evaluate`` without importing torch for every ``bench`` command."""
    if name == "evaluate":
        from bench.api import evaluate

        return evaluate
    raise AttributeError(f"module 'bench' has no attribute {name!r}")
