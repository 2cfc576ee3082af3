"""The adaptive attack on RIDE (``ride-st``): RIDE's frozen estimation pass reproduces its output, and
the attack beats the ``eot`` cell it replaces on the same points, inside its ball."""

from __future__ import annotations

import pytest
import torch

import attacks
import defenses
from bench.core.errors import BenchError
from bench.run.runner import resolve_params

EPS = 0.1
N = 40


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
# RIDE trains for hundreds of float32 Adam steps: one thread keeps the sums in one order.


def _ride(model, **over):
    factory = defenses.DEFENSES.get("ride")
    params = {"iterations": 30, "checkpoints": 2, **over}
    return factory(**resolve_params(factory, "digits", params, seed=0)).prepare(model)


def _robust(ride, x_adv, y) -> float:
    ride.reset()  # as the harness scores: the same draws for every attack's examples
    return float((ride.predict(x_adv).argmax(1) == y).float().mean())


def _craft(ride, attack, x, y) -> torch.Tensor:
    ride.reset()
    attack.bind(ride)
    return attack.run(ride.attack_model(), x, y).x_adv


def _in_ball(x_adv, x) -> bool:
    return float((x_adv - x).abs().max()) <= EPS + 1e-6 and float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1


def test_frozen_ride_replays_the_transform_differentiably(digits_model, digits_test):
    ride = _ride(digits_model)
    x = digits_test.x[:6]
    ride.reset()
    out, frozen = ride.transform_frozen(x)
    ride.reset()
    assert torch.equal(out, ride.transform(x))  # keeping the nets draws nothing extra
    xg = x.clone().requires_grad_(True)
    rep = frozen(xg, torch.Generator().manual_seed(0), samples=64)
    # the same nets, another draw of z: close to RIDE's output, far closer than RIDE is to its input
    assert float((rep - out).detach().abs().mean()) < 0.3 * float((out - x).abs().mean())
    (grad,) = torch.autograd.grad(rep.sum(), xg)
    assert float(grad.abs().sum()) > 0
    with pytest.raises(BenchError, match="trained on 6 images"):
        frozen(x[:3])


@pytest.mark.slow  # about 20 s on a loaded 2-core CPU: 16 RIDE runs on 40 images
def test_ride_st_beats_the_eot_cell_on_the_same_points(digits_model, digits_test):
    # measured (one thread): eot 65%, ride-st 50%, gray-box PGD 62.5% robust accuracy under RIDE
    x, y = digits_test.x[:N], digits_test.y[:N]
    ride = _ride(digits_model)
    old = _craft(ride, attacks.create("eot", attack="pgd", n=2, steps=5, step_size=0.04, eps=EPS), x, y)
    new = _craft(ride, attacks.create("ride-st", eps=EPS, steps=10, rounds=3, draws=2), x, y)
    base = attacks.create("pgd", eps=EPS)(digits_model, x, y)
    assert _in_ball(new, x) and _in_ball(old, x)
    acc_old, acc_new, acc_base = _robust(ride, old, y), _robust(ride, new, y), _robust(ride, base, y)
    assert acc_new < acc_old and acc_new <= acc_base, (acc_new, acc_old, acc_base)


@pytest.mark.parametrize("network", ["plain", "table3"])
def test_ride_st_stays_in_the_ball_and_records_its_trace(digits_model, digits_test, network):
    x, y = digits_test.x[:8], digits_test.y[:8]
    ride = _ride(digits_model, iterations=5, checkpoints=1, network=network)
    ride.reset()
    atk = attacks.create("ride-st", eps=EPS, steps=3, rounds=2, draws=1).bind(ride)
    res = atk.run(ride.attack_model(), x, y)
    assert _in_ball(res.x_adv, x) and not torch.equal(res.x_adv, x)
    assert res.loss_trace.shape == (6, 8)  # 3 gray-box steps, then 3 through the frozen nets
    assert res.first_success.shape == (8,)


def test_ride_st_needs_ride_and_sane_budgets(digits_model):
    with pytest.raises(BenchError, match="rounds >= 1"):
        attacks.create("ride-st", eps=EPS, rounds=0)
    with pytest.raises(BenchError, match="init must be"):
        attacks.create("ride-st", eps=EPS, init="zero")
    atk = attacks.create("ride-st", eps=EPS)
    with pytest.raises(BenchError, match="RIDE defense"):
        atk.run(digits_model, torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long))
