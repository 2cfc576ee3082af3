"""The attack suite on real data: contracts, strength, and agreement with foolbox / pyautoattack."""

from __future__ import annotations

import pytest
import torch

import attacks
from bench.run.audit import audit
from tests.conftest import accuracy

BALL = {"fgsm": 0.1, "bim": 0.1, "pgd": 0.1, "mim": 0.1, "pgd-l2": 1.0}
MINIMAL = ("deepfool", "cw-l2", "jsma")


@pytest.fixture(scope="module")
def digits_batch(digits_test):
    return digits_test.x[:120], digits_test.y[:120]


@pytest.fixture(scope="module")
def cifar200(cifar_test):
    return cifar_test.x[:200], cifar_test.y[:200]


@pytest.fixture(scope="module")
def cifar_pgd(cifar_resnet32, cifar200):
    """x_adv of seeded PGD on the 200 CIFAR images, crafted once per budget: three tests use the
    eps 1/255, 10-step run (a ResNet-32 PGD on 200 images is seconds of CPU each)."""
    x, y = cifar200
    done: dict[tuple, torch.Tensor] = {}

    def craft(eps: float, steps: int, step_size: float | None = None) -> torch.Tensor:
        key = (eps, steps, step_size)
        if key not in done:
            done[key] = attacks.create("pgd", eps=eps, steps=steps, step_size=step_size)(cifar_resnet32, x, y)
        return done[key]

    return craft


def test_every_attack_is_registered():
    expected = {"fgsm", "bim", "pgd", "pgd-l2", "mim", "deepfool", "cw-l2", "jsma", "autoattack"}
    assert expected <= set(attacks.list_names())


@pytest.mark.parametrize("name", sorted(BALL))
def test_ball_attacks_respect_contract_and_lower_accuracy(digits_model, digits_batch, name):
    x, y = digits_batch
    atk = attacks.create(name, eps=BALL[name])
    x_adv = atk(digits_model, x, y)
    report = audit(x, x_adv, atk.norm, atk.eps)
    assert report.max_perturbation <= BALL[name] + 1e-5
    assert accuracy(digits_model, x_adv, y) < accuracy(digits_model, x, y) - 0.2


@pytest.mark.slow
@pytest.mark.parametrize("name,kw", [("deepfool", {}), ("cw-l2", {"lr": 0.05, "steps": 60}),
                                     ("jsma", {"gamma": 0.3})])
def test_minimal_norm_attacks_flip_predictions(digits_model, digits_batch, name, kw):
    x, y = digits_batch
    atk = attacks.create(name, **kw)
    result = atk.run(digits_model, x, y)
    x_adv = result.x_adv
    audit(x, x_adv, atk.norm, None)  # [0, 1] only; the norm is reported, not bounded
    with torch.no_grad():
        pred = digits_model(x_adv).argmax(1)
    if name == "jsma":  # targeted: the seeded random wrong class is reached for most examples
        assert (pred == result.target.to(pred.device)).float().mean() > 0.7
    else:
        assert (pred != y).float().mean() > 0.95


def test_targeted_mode_for_iterative_attacks(digits_model, digits_batch):
    x, y = digits_batch
    for name in ("pgd", "bim", "mim", "fgsm"):
        atk = attacks.create(name, eps=0.3, targeted=True, seed=1)
        result = atk.run(digits_model, x, y)
        assert (result.target != y).all()
        with torch.no_grad():
            hit = (digits_model(result.x_adv).argmax(1) == result.target).float().mean()
        assert hit > (0.2 if name == "fgsm" else 0.8), name


def test_call_is_run_x_adv(digits_model, digits_batch):
    """``attack(model, x, y)`` is the x_adv of ``attack.run(model, x, y)`` (the AttackResult)."""
    x, y = digits_batch
    atk = attacks.create("deepfool")
    result = atk.run(digits_model, x, y)
    assert torch.equal(atk(digits_model, x, y), result.x_adv) and result.target is None


@pytest.mark.slow
def test_pgd10_on_resnet32_and_fgsm_is_weaker(cifar_resnet32, cifar200, cifar_pgd):
    x, y = cifar200
    assert accuracy(cifar_resnet32, x, y) > 0.9
    pgd = accuracy(cifar_resnet32, cifar_pgd(8 / 255, 10), y)
    fgsm = accuracy(cifar_resnet32, attacks.create("fgsm", eps=8 / 255)(cifar_resnet32, x, y), y)
    assert pgd <= 0.02
    assert fgsm >= pgd + 0.05


@pytest.mark.slow
def test_robust_accuracy_does_not_rise_with_eps(cifar_resnet32, cifar200, cifar_pgd):
    x, y = cifar200
    accs = []
    for eps in (0.25 / 255, 0.5 / 255, 1 / 255, 2 / 255):
        accs.append(accuracy(cifar_resnet32, cifar_pgd(eps, 10, eps / 4), y))
    assert all(a >= b for a, b in zip(accs, accs[1:])), accs
    assert accs[0] > accs[-1] + 0.3


@pytest.mark.slow
def test_more_pgd_steps_never_help_the_model(cifar_resnet32, cifar200, cifar_pgd):
    x, y = cifar200
    eps = 1 / 255
    robust = []
    for steps in (2, 5, 10):  # 10: the run the eps and foolbox tests also read (was 5, 10, 20)
        x_adv = cifar_pgd(eps, steps, eps / 4)
        with torch.no_grad():
            robust.append(cifar_resnet32(x_adv).argmax(1) == y)
    # Same seed and step size: the first iterates coincide, and a success is kept, so per example
    # every success of the shorter run is a success of the longer one.
    assert not (robust[1] & ~robust[0]).any() and not (robust[2] & ~robust[1]).any()
    assert robust[2].float().mean() <= robust[0].float().mean()


@pytest.mark.slow
def test_cw_finds_smaller_perturbations_than_deepfool(cifar_resnet32, cifar_test):
    x, y = cifar_test.x[:16], cifar_test.y[:16]
    with torch.no_grad():
        ok = cifar_resnet32(x).argmax(1) == y
    df = attacks.create("deepfool")(cifar_resnet32, x, y)
    cw = attacks.create("cw-l2", lr=0.01, steps=60, binary_search_steps=4)(cifar_resnet32, x, y)
    with torch.no_grad():
        assert (cifar_resnet32(df).argmax(1) != y).all() and (cifar_resnet32(cw).argmax(1) != y).all()
    l2 = lambda xa: float((xa - x).flatten(1).norm(dim=1)[ok].mean())  # noqa: E731
    assert l2(cw) <= l2(df)


@pytest.mark.slow
def test_our_pgd_is_not_weaker_than_foolbox_and_apgd(cifar_resnet32, cifar200, cifar_pgd):
    import foolbox as fb

    x, y = cifar200
    eps = 1 / 255
    ours = accuracy(cifar_resnet32, cifar_pgd(eps, 10, eps / 4), y)
    fmodel = fb.PyTorchModel(cifar_resnet32, bounds=(0, 1))
    _, _, success = fb.attacks.LinfPGD(steps=10, abs_stepsize=eps / 4)(fmodel, x, y, epsilons=eps)
    foolbox_acc = 1 - float(success.float().mean())
    apgd = attacks.create("autoattack", eps=eps, attacks=["apgd-ce"], n_iter=10)
    apgd_acc = accuracy(cifar_resnet32, apgd(cifar_resnet32, x, y), y)
    assert ours <= foolbox_acc + 0.02, (ours, foolbox_acc)
    assert abs(ours - apgd_acc) <= 0.05, (ours, apgd_acc)


@pytest.mark.slow
def test_autoattack_cheap_budget_respects_the_ball(digits_model, digits_batch):
    x, y = digits_batch
    atk = attacks.create("autoattack", eps=0.1, attacks=["apgd-ce", "apgd-t"], n_iter=10)
    x_adv = atk(digits_model, x, y)
    audit(x, x_adv, "Linf", 0.1)
    assert accuracy(digits_model, x_adv, y) < accuracy(digits_model, x, y) - 0.2
