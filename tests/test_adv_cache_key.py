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


def test_a_targeted_attack_without_a_trace_keeps_its_targets_beside_the_cached_examples(tmp_path):
    """JSMA returns no trace; its target classes must still reach a cell that reads its examples from
    the cache, or that cell's failure indicators judge success as untargeted."""
    import torch

    from bench.core.contracts import AttackResult
    from bench.run.evaluation import Evaluator

    spec = grid.load("ci")
    store = ArtifactStore(spec, RunOptions(cache_dir=tmp_path, results_dir=tmp_path, tracking=False), None)
    ev = Evaluator(spec, store)
    target = torch.tensor([3, 1, 4])
    ev._keep_trace("k", AttackResult(torch.zeros(3, 1, 8, 8), target=target))
    cached = ev._cached_trace("k")
    assert cached is not None and torch.equal(cached.target, target) and cached.loss_trace is None
