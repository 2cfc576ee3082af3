"""Transfer attacks craft to the end of their budget: the first adversarial iterate on a surrogate,
just across its boundary, transfers far worse than the final one (Attack.full_budget)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import attacks
from bench.core import data, models


def _fit(arch: str, seed: int, x: torch.Tensor, y: torch.Tensor, epochs: int = 15) -> torch.nn.Module:
    torch.manual_seed(seed)
    m = models.create(arch, 10, 1)
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            b = perm[i : i + 64]
            opt.zero_grad()
            F.cross_entropy(m(x[b]), y[b]).backward()
            opt.step()
    return m.eval()


@pytest.fixture(scope="module")
def digits_pair():
    torch.set_num_threads(1)
    tr, te = data.load("digits", "train"), data.load("digits", "test")
    return _fit("small-cnn", 0, tr.x, tr.y), _fit("lenet5", 1, tr.x, tr.y), te.x[:200], te.y[:200]


def _acc(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return 100 * (model(x).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize("name", ["pgd", "mim", "bim"])
def test_the_final_iterate_transfers_better_and_stays_in_the_ball(digits_pair, name):
    target, surrogate, x, y = digits_pair
    first = attacks.create(name, eps=0.2)
    final = first.full_budget()
    assert final.keep_last and not first.keep_last and "keep_last" not in first.config()
    x_first, x_final = first(surrogate, x, y), final(surrogate, x, y)
    assert float((x_final - x).abs().max()) <= 0.2 + 1e-6 and 0 <= float(x_final.min()) and float(x_final.max()) <= 1
    # measured: PGD 86.7% of the target's answers survive the first iterates, 35.3% the final ones (300 points)
    assert _acc(target, x_final, y) < _acc(target, x_first, y) - 15
    assert _acc(surrogate, x_final, y) <= _acc(surrogate, x_first, y) + 1  # still adversarial on the surrogate


def test_fgsm_full_budget_steps_even_where_the_surrogate_is_already_wrong(digits_pair):
    _, surrogate, x, y = digits_pair
    wrong = surrogate(x).argmax(1) != y
    assert wrong.any()
    fgsm = attacks.create("fgsm", eps=0.1)
    assert torch.equal(fgsm(surrogate, x, y)[wrong], x[wrong])
    assert not torch.equal(fgsm.full_budget()(surrogate, x, y)[wrong], x[wrong])


def test_minimal_norm_attacks_are_unchanged():
    cw = attacks.create("cw-l2")
    assert cw.full_budget() is cw  # its smallest adversarial point is what it reports


def test_the_store_crafts_transfer_cells_to_the_end_and_keys_them_apart(tmp_path):
    from bench.run.artifacts import ArtifactStore
    from bench.run.runner import RunOptions
    from bench.spec import grid

    spec = grid.parse({"name": "t", "dataset": "digits", "arch": "small-cnn", "limit": 8,
                       "train": {"standard": {"epochs": 1}}, "runtime": {"none": {}},
                       "attacks": [{"name": "pgd", "eps": 0.1},
                                   {"name": "pgd", "label": "pgd-t", "threat": "transfer", "eps": 0.1,
                                    "surrogate": {"arch": "lenet5", "seed": 1}}]})
    store = ArtifactStore(spec, RunOptions(cache_dir=tmp_path, results_dir=tmp_path, tracking=False,
                                           device="cpu", progress=False, log_samples=False), None)
    base, transfer = spec.cells()
    assert not store.attack(base)[0].keep_last and store.attack(transfer)[0].keep_last
    assert "keep_last" in store.attack(transfer)[0].config()


def test_wrappers_pass_the_full_budget_to_the_attack_they_run():
    eot = attacks.create("eot", n=2)
    full = eot.full_budget()
    assert full.inner.keep_last and not eot.inner.keep_last and full.config()["keep_last"] is True


def test_transfer_cells_and_adaptive_cells_on_randomized_defenses_craft_to_the_end():
    from types import SimpleNamespace

    from bench.run.evaluation import crafts_full_budget

    cell = SimpleNamespace
    rand, fixed = SimpleNamespace(randomized=True), SimpleNamespace(randomized=False)
    assert crafts_full_budget(cell(threat="transfer"), None)
    assert crafts_full_budget(cell(threat="adaptive"), rand) and not crafts_full_budget(cell(threat="adaptive"), fixed)
    assert not crafts_full_budget(cell(threat="base"), rand)


def test_silent_success_of_a_final_iterate_attack_names_another_remedy():
    """An attack returning its final iterate on purpose is not told to return the best one instead."""
    from attacks import AttackResult
    from bench.run import indicators

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()
    x = torch.rand(6, 1, 8, 8)
    y = model(x).argmax(1)  # every point correct: x itself is not adversarial
    result = AttackResult(x.clone(), first_success=torch.zeros(6, dtype=torch.long))  # "an iterate was"
    fields = {}
    for pgd in (attacks.create("pgd", eps=0.1, steps=2), attacks.create("pgd", eps=0.1, steps=2).full_budget()):
        out = indicators.compute(pgd, model, x, y, x.clone(), y.clone(), torch.ones(6, dtype=torch.bool),
                                 result=result, transfer=True)
        fields[pgd.keep_last] = out["indicators"]["silent_success"]
    assert fields[False]["fired"] and fields[True]["fired"]
    assert fields[False]["remedy"] == indicators.REMEDIES["silent_success"]
    assert fields[True]["remedy"] == indicators.FINAL_ITERATE_REMEDY
