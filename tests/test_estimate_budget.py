"""bench estimate scales each cell by its real budget, including budgets an unset value leaves to the cell."""

from __future__ import annotations

import attacks
import defenses
from bench.estimate import real_attack_budget, work_ratio
from bench.smoke import ATTACK_CAPS


def test_eot_without_n_is_scaled_by_the_purifiers_declared_draws():
    eot, tvm = attacks.ATTACKS.get("eot"), defenses.DEFENSES.get("tvm")
    full = real_attack_budget(eot, {"steps": 10}, tvm, {"eot_samples": 6}, "digits", 64)
    assert full["n"] == 6
    assert work_ratio(full, {"steps": 2, "n": 2}, {}, ATTACK_CAPS, factory=eot)[0] == 10 / 2 * 6 / 2
    ride = defenses.DEFENSES.get("ride")
    assert real_attack_budget(eot, {}, ride, {}, "digits", 64)["n"] == ride().eot_samples  # the class default
    assert real_attack_budget(eot, {"n": 3}, tvm, {"eot_samples": 6}, "digits", 64)["n"] == 3  # the grid's n wins


def test_jsma_without_max_iters_is_gamma_times_features_over_two():
    jsma = attacks.ATTACKS.get("jsma")
    assert real_attack_budget(jsma, {"gamma": 0.5}, None, {}, "digits", 64)["max_iters"] == 16
