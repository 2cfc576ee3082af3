"""Adversarial-robustness benchmark harness: core (CLI, registry, data, models, runner, tracking)."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``bench.evaluate`` without importing torch for every ``bench`` command."""
    if name == "evaluate":
        from bench.api import evaluate

        return evaluate
    raise AttributeError(f"module 'bench' has no attribute {name!r}")
