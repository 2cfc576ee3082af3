"""Cached adversarial examples are keyed by the attack's parameters as they run, so a change of an
attack's defaults in the code (CW-L2's per-dataset lr, say) never reuses examples crafted before it."""

from __future__ import annotations

from bench.core.methods import ATTACKS
from bench.run.artifacts import ArtifactStore
from bench.run.options import RunOptions
from bench.spec import grid


def test_changing_an_attacks_dataset_defaults_changes_its_cache_key(tmp_path, monkeypatch):
    spec = grid.load("ci")
    store = ArtifactStore(spec, RunOptions(cache_dir=tmp_path, results_dir=tmp_path, tracking=False), None)
    cell = next(c for c in spec.cells() if c.attack == "pgd" and c.threat == "base")
    before = store.adv_key(cell)
    assert store.adv_key(cell) == before  # deterministic
    factory = ATTACKS.get("pgd")
    changed = {family: {**params, "steps": int(params.get("steps", 10)) + 1}
               for family, params in factory.dataset_defaults.items()}
    monkeypatch.setattr(factory, "dataset_defaults", changed)
    assert store.adv_key(cell) != before
