"""bench estimate scales each cell by its real budget, including budgets an unset value leaves to the cell."""

from __future__ import annotations

import pytest

import attacks
import defenses
from bench.run.estimate import craft_ratio, prepare_ratio, real_attack_budget, work_ratio
from bench.spec.smoke import ATTACK_CAPS


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


# Smoke budgets of the runtime defenses (bench.spec.smoke.RUNTIME_CAPS applied to the grids' values).
RIDE_SMOKE = {"iterations": 2, "checkpoints": 1, "lr": 1e-3}
RMC_SMOKE = {"k": 8, "max_epochs": 2, "patience": 1}


def test_bpda_against_ride_scales_by_rides_iterations_and_checkpoints():
    # ride-bpda-mnist: BPDA runs RIDE's transform at every PGD step, so RIDE's 100 x 2 iterations cost
    # in crafting as they do in predicting (the smoke ran 2 x 1).
    bpda, ride = attacks.ATTACKS.get("bpda"), defenses.DEFENSES.get("ride")
    full_ride = {"iterations": 100, "checkpoints": 2, "lr": 1e-3}
    r, how = craft_ratio(bpda, {"steps": 10, "step_size": 0.02}, {"steps": 2, "step_size": 0.02}, ride,
                         full_ride, RIDE_SMOKE, "adaptive", "mnist")
    rides = ride.work_units({"est_samples": 8, **full_ride}) / ride.work_units({"est_samples": 8, **RIDE_SMOKE})
    assert 30 < rides < 100 / 2 * 2 / 1  # more than one iteration's work is fixed per checkpoint and call
    assert r == pytest.approx(10 / 2 * rides)
    assert "steps 10/2" in how and "ride at every step" in how and "iterations" in how
    # adaptive pgd differentiates RIDE's attack_model (EOT of BPDA of its transform): the same
    pgd = attacks.ATTACKS.get("pgd")
    assert craft_ratio(pgd, {"steps": 10}, {"steps": 2}, ride, full_ride, RIDE_SMOKE, "adaptive", "mnist")[0] == r
    # a base attack never runs the defense: steps only
    assert craft_ratio(pgd, {"steps": 10}, {"steps": 2}, ride, full_ride, RIDE_SMOKE, "base", "mnist")[0] == 5


def test_eot_against_ride_multiplies_draws_steps_and_rides_work():
    eot, ride = attacks.ATTACKS.get("eot"), defenses.DEFENSES.get("ride")
    full = real_attack_budget(eot, {"steps": 10}, ride, {}, "cifar10", 3072)  # n: RIDE's eot_samples (4)
    r, how = craft_ratio(eot, full, {"steps": 2, "n": 2}, ride, {}, RIDE_SMOKE, "adaptive", "cifar10")
    rides = ride.work_units({"est_samples": 8, "iterations": 2000, "checkpoints": 5}) / ride.work_units(
        {"est_samples": 8, **RIDE_SMOKE})
    assert r == pytest.approx(10 / 2 * 4 / 2 * rides) and rides > 1000 and "ride at every step" in how


def test_purifier_with_nothing_shrunk_is_not_rescaled():
    # median's transform runs at full cost in the smoke: its steps are the only factor
    eot, median = attacks.ATTACKS.get("eot"), defenses.DEFENSES.get("median")
    assert craft_ratio(eot, {"steps": 10, "n": 4}, {"steps": 2, "n": 2}, median, {}, {}, "adaptive", "digits")[0] == 10


def test_wrapper_without_steps_counts_its_inner_attacks_default_steps():
    bpda, median, pgd = attacks.ATTACKS.get("bpda"), defenses.DEFENSES.get("median"), attacks.ATTACKS.get("pgd")
    steps = pgd.dataset_defaults.get("cifar10", {}).get("steps", 10)
    assert steps > 2
    r, how = craft_ratio(bpda, {}, {"steps": 2}, median, {}, {}, "adaptive", "cifar10")
    assert r == steps / 2 and f"steps {steps}/2" in how


def test_only_stream_attacks_run_rmcs_adaptation_while_crafting():
    rmc = defenses.DEFENSES.get("rmc")
    # pgd-nn searches D' but never adapts: its steps only
    nn = attacks.ATTACKS.get("pgd-nn")
    assert craft_ratio(nn, {"steps": 10}, {"steps": 2}, rmc, {}, RMC_SMOKE, "adaptive", "cifar10")[0] == 5
    # pgd-skip runs the defender's stream besides its steps: the larger ratio (K batches x epoch cap)
    skip = attacks.ATTACKS.get("pgd-skip")
    r, how = craft_ratio(skip, {"steps": 10}, {"steps": 2}, rmc, {}, RMC_SMOKE, "adaptive", "cifar10")
    assert r == 1024 / 128 * 100 / 2 and "k 8/1" in how
    # with a timed step: an epoch's steps at their batch sizes (8 full batches of 128 against one of 8)
    r, how = craft_ratio(skip, {"steps": 10}, {"steps": 2}, rmc, {}, RMC_SMOKE, "adaptive", "cifar10",
                         step_cost=lambda b: b / 100 + 0.5)
    assert r == pytest.approx(8 * 1.78 / 0.58 * 100 / 2) and "k 1024/8: an epoch's steps timed" in how
    # GMSA runs one stream per round and one more
    gmsa = attacks.ATTACKS.get("gmsa-avg")
    r = craft_ratio(gmsa, {"steps": 10, "rounds": 3}, {"steps": 2, "rounds": 1}, rmc, {}, RMC_SMOKE, "adaptive",
                    "cifar10")[0]
    assert r == 1024 / 128 * 100 / 2 * 4 / 2


def test_prepare_scales_copies_only_for_an_adversarial_database():
    webnn, deepnn = defenses.DEFENSES.get("webnn"), defenses.DEFENSES.get("deepnn")
    smoke = {"copies": 1, "db_params": {"steps": 2}}
    r, how = prepare_ratio(webnn, {}, smoke, "cifar10")  # cifar10: 4 copies, D' attack of 10 steps
    assert r == 4 / 1 * 11 / 3 and "copies 4/1" in how
    assert prepare_ratio(deepnn, {"copies": 4}, smoke, "cifar10") == (1.0, "")  # D: clean images only


def test_ride_st_scales_with_its_ride_runs_not_its_margin_steps():
    # ride-st runs RIDE rounds x draws times per image; its PGD steps go through RIDE's frozen
    # estimation pass and cost little beside them, so the smoke's steps 2 must not scale the prediction
    st, ride = attacks.ATTACKS.get("ride-st"), defenses.DEFENSES.get("ride")
    full_ride = {"iterations": 100, "checkpoints": 2, "lr": 1e-3}
    rides = ride.work_units({"est_samples": 8, **full_ride}) / ride.work_units({"est_samples": 8, **RIDE_SMOKE})
    r, how = craft_ratio(st, {"steps": 10, "rounds": 4, "draws": 2}, {"steps": 2, "rounds": 1, "draws": 2}, ride,
                         full_ride, RIDE_SMOKE, "adaptive", "mnist")
    assert r == pytest.approx(4 * rides) and "rounds 4/1" in how and "steps" not in how.split(" x ")[0]
