"""The foundation layer: what attacks/, defenses/ and the harness all build on.

Errors, registries and plugin entry points, devices, datasets, architectures and model loading, the
stream order, the on-disk cache with atomic IO and locks, peak-memory probes. Nothing here imports
attacks/, defenses/ or the harness above it (bench.run.runner, bench.cli, tracking, reporting): the
import-linter contracts in pyproject.toml enforce it.
"""
