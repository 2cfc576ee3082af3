"""PGD-NN / PGD-NN2 (RMC section 5.1, supplement C.1) against the nearest-neighbour defenses on digits.

Measured on the first 60 test digits at eps 0.2 (digits defaults otherwise: 10 steps of 0.075, random
start, temperature 0.3), accuracy in %:

            clean   base PGD   pgd-nn   pgd-nn guide   pgd-nn2
    deepnn   96.7       68.3      8.3           18.3      31.7
    webnn    96.7       80.0     11.7           25.0      55.0
    rmc      98.3       66.7     28.3              -      55.0

At the default grid's eps 0.1 the digits' neighbourhoods barely move (deepnn 83 -> 75, webnn 88 -> 75
under pgd-nn), so these tests use 0.2. RMC under pgd-nn keeps more accuracy than WebNN does, the
direction of the paper's Table 4 (75.4 vs 1.5 on CIFAR-10), by a smaller margin on digits.
"""

from __future__ import annotations

import pytest
import torch

import attacks
import defenses
from bench.core.errors import BenchError
from bench.run.audit import audit
from bench.run.runner import resolve_params

EPS = 0.2
N = 60


class Lab:
    """Defenses and adversarial examples built once per module, on demand."""

    def __init__(self, model, train_set, test_set, cache_dir) -> None:
        self.model, self.train_set, self.cache_dir = model, train_set, str(cache_dir)
        self.x, self.y = test_set.x[:N], test_set.y[:N]
        self._defenses: dict[str, object] = {}
        self._adv: dict[tuple, torch.Tensor] = {}

    def defense(self, name: str):
        if name not in self._defenses:
            factory = defenses.DEFENSES.get(name)
            params = resolve_params(factory, "digits", {}, seed=0, cache_dir=self.cache_dir)
            self._defenses[name] = factory(**params).prepare(self.model, self.train_set)
        return self._defenses[name]

    def attack(self, name: str, **over):
        factory = attacks.ATTACKS.get(name)
        params = resolve_params(factory, "digits", over, seed=0)
        params["eps"] = EPS  # as the runner does: the cell's eps overrides the family default
        return factory(**params)

    def adv(self, attack: str, defense: str | None = None, **over) -> torch.Tensor:
        """x_adv, audited as the runner audits: inside [0, 1] and the eps ball."""
        key = (attack, defense, tuple(sorted(over.items())))
        if key not in self._adv:
            atk = self.attack(attack, **over)
            if defense is None:
                x_adv = atk(self.model, self.x, self.y)
            else:
                d = self.defense(defense)
                x_adv = atk.bind(d)(d.attack_model(), self.x, self.y)
            report = audit(self.x, x_adv, atk.norm, atk.eps)
            assert report.max_perturbation <= EPS + 1e-6
            self._adv[key] = x_adv
        return self._adv[key]

    def acc(self, defense: str, x: torch.Tensor) -> float:
        d = self.defense(defense)
        d.reset()
        return float((d.predict(x).argmax(1) == self.y).float().mean())


@pytest.fixture(scope="module")
def lab(digits_model, digits_train, digits_test, nn_cache) -> Lab:
    return Lab(digits_model, digits_train, digits_test, nn_cache)


def test_registered_as_defense_aware_attacks():
    for name in ("pgd-nn", "pgd-nn2"):
        cls = attacks.ATTACKS.get(name)
        assert cls.needs_defense
        assert set(cls.applies_to) == {"deepnn", "webnn", "rmc", "rmc-plus"}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["deepnn", "webnn"])
def test_pgd_nn_breaks_neighbour_defenses_far_beyond_base_pgd(lab, name):
    base = lab.acc(name, lab.adv("pgd"))
    nn = lab.acc(name, lab.adv("pgd-nn", name))
    # measured: deepnn 68.3 -> 8.3, webnn 80.0 -> 11.7
    assert nn < base - 0.4, (name, base, nn)
    assert nn < 0.25, (name, nn)


@pytest.mark.slow
def test_guide_objective_also_beats_base_pgd(lab):
    base = lab.acc("deepnn", lab.adv("pgd"))
    guide = lab.acc("deepnn", lab.adv("pgd-nn", "deepnn", objective="guide"))
    assert guide < base - 0.3, (base, guide)  # measured 68.3 -> 18.3


@pytest.mark.slow
def test_pgd_nn2_lowers_webnn_below_clean(lab):
    clean = lab.acc("webnn", lab.x)
    nn2 = lab.acc("webnn", lab.adv("pgd-nn2", "webnn"))
    assert nn2 < clean - 0.25, (clean, nn2)  # measured 96.7 -> 55.0


@pytest.mark.slow
def test_rmc_withstands_pgd_nn_better_than_webnn(lab):
    webnn = lab.acc("webnn", lab.adv("pgd-nn", "webnn"))
    d = lab.defense("rmc")
    d.predict(lab.x[:2])  # move the stream on: the attack starts from reset() and puts this state back
    before = d.snapshot()["model"]
    x_adv = lab.adv("pgd-nn", "rmc")
    assert all(torch.equal(v, d.adapted.state_dict()[k]) for k, v in before.items())
    rmc = lab.acc("rmc", x_adv)
    assert rmc > webnn + 0.08, (rmc, webnn)  # measured 28.3 vs 11.7 (paper, CIFAR-10: 75.4 vs 1.5)


def test_needs_a_bound_neighbour_defense(lab):
    x, y = lab.x[:4], lab.y[:4]
    atk = lab.attack("pgd-nn")
    with pytest.raises(BenchError, match="needs a bound nearest-neighbour runtime defense"):
        atk(lab.model, x, y)
    none = defenses.create("none").prepare(lab.model)
    with pytest.raises(BenchError, match="needs a bound nearest-neighbour runtime defense"):
        lab.attack("pgd-nn2").bind(none)(lab.model, x, y)
    with pytest.raises(BenchError, match="objective"):
        attacks.create("pgd-nn", objective="nope")
