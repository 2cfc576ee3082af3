"""Adversarial-robustness benchmark harness: core (CLI, registry, data, models, runner, tracking)."""

__version__ = "0.1.0"
