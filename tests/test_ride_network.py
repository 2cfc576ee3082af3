"""RIDE's ``table3`` network (Lin, Pfister, Zhang, Table 3): dropout 0.5 on Table 3's layers while the
per-image net trains, off in the estimation pass, a sigmoid output; a batch still equals one image at a
time, and ride-st's frozen replay gives RIDE's own estimate."""

from __future__ import annotations

import tomllib

import pytest
import torch

import defenses
from bench.core.errors import BenchError
from bench.spec import grid
from bench.spec.validate import check_spec
from defenses.ride import RIDE, GroupedFCN

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _ride(**over) -> RIDE:
    params = {"iterations": 20, "checkpoints": 2, "lr": 1e-2, "sigma": 0.3, "network": "table3", **over}
    return defenses.create("ride", **params)


def _images(n: int, side: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_table3_net_has_table3_layers_and_a_sigmoid_output(digits_test):
    x = digits_test.x[:3]
    out, nets = _ride(iterations=10).purify_keep(x, [1, 2, 3])
    net = nets[-1]
    assert net.dropout == (1, 2) and net.sigmoid  # MNIST: conv2, conv3
    rgb = torch.rand(1, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    for hidden, layers in ((None, (1, 2)), (7, (3, 4, 5))):  # CIFAR-10: conv2-3; ImageNet: conv4-6
        rgb_net = _ride(iterations=1, checkpoints=1, hidden_layers=hidden).purify_keep(rgb, [0])[1][-1]
        assert rgb_net.dropout == layers and rgb_net.sigmoid
    z = 5 * torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))  # far outside [0, 1]
    with torch.no_grad():
        y = net(z)
    assert float(y.min()) >= 0 and float(y.max()) <= 1 and float(out.min()) >= 0 and float(out.max()) <= 1
    # the same weights without the sigmoid: a linear output that leaves [0, 1], which the sigmoid maps
    # into (0, 1)
    fresh = GroupedFCN(net.widths, 3, [torch.Generator().manual_seed(i) for i in range(3)], z.device,
                       dropout=(1, 2), sigmoid=True)
    linear = GroupedFCN(net.widths, 3, [torch.Generator().manual_seed(i) for i in range(3)], z.device)
    with torch.no_grad():
        y_fresh, y_linear = fresh(z), linear(z)
    assert float(y_linear.min()) < 0 or float(y_linear.max()) > 1
    assert float(y_fresh.min()) > 0 and float(y_fresh.max()) < 1
    assert torch.equal(y_fresh, torch.sigmoid(y_linear))
    assert not _ride(network="plain", iterations=1).purify_keep(x, [1, 2, 3])[1][-1].sigmoid


def test_dropout_masks_drop_half_per_image_and_only_in_training():
    gens = [torch.Generator().manual_seed(s) for s in (5, 6)]
    net = GroupedFCN([1, 16, 16, 16, 1], 2, gens, torch.device("cpu"), dropout=(1, 2), sigmoid=True)
    masks = net.draw_masks([torch.Generator().manual_seed(s) for s in (7, 8)], 3, (8, 8), torch.device("cpu"))
    assert masks.shape == (3, 2, 32, 8, 8) and set(masks.unique().tolist()) == {0.0, 2.0}  # 1 / (1 - p)
    for layer in range(2):  # p = 0.5 of each dropout layer's units dropped
        assert 0.45 < float((masks[:, layer] == 0).float().mean()) < 0.55
    # image 1's masks are those it draws alone, and differ from image 0's
    alone = net.draw_masks([torch.Generator().manual_seed(8)], 3, (8, 8), torch.device("cpu"))
    assert torch.equal(masks[:, :, 16:], alone) and not torch.equal(masks[:, :, :16], masks[:, :, 16:])
    z = torch.rand(1, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(net(z, masks[0]), net(z, masks[1]))  # training: each step its own mask
    assert torch.equal(net(z), net(z))  # estimation: no dropout, a function of z alone


def test_training_uses_the_masks_and_is_reproducible(digits_test, monkeypatch):
    x = digits_test.x[:2]
    ride = _ride()
    out = ride.purify(x, [1, 2])
    assert torch.equal(out, ride.purify(x, [1, 2]))  # the masks come from the images' seeds
    assert not torch.allclose(out, ride.purify(x, [3, 4]), atol=1e-3)

    draw = GroupedFCN.draw_masks

    def keep_all(self, *args):  # the same draws, every unit kept
        m = draw(self, *args)
        return None if m is None else torch.ones_like(m)

    monkeypatch.setattr(GroupedFCN, "draw_masks", keep_all)
    # the same draws of noise and weights with dropout switched off: another estimate
    assert not torch.allclose(out, ride.purify(x, [1, 2]), atol=1e-3)


def test_table3_batch_equals_one_at_a_time_across_mask_chunks():
    # 28x28: masks come in chunks of 2 training steps (8x8 digits, in tests/test_purifiers.py: 32)
    x = _images(3, 28)
    ride = _ride(iterations=12, checkpoints=2)
    batched = ride.purify(x, [11, 12, 13])
    alone = torch.cat([ride.purify(x[i : i + 1], [11 + i]) for i in range(3)])
    assert torch.allclose(batched, alone, rtol=0, atol=1e-9)


def test_frozen_ride_replays_the_table3_estimate():
    x = _images(3, 8, seed=1)
    # sigma 0: z = x_t exactly, so the replay must give RIDE's own estimate, bit for bit
    ride = _ride(sigma=0.0)
    out, frozen = ride.transform_frozen(x)
    rep = frozen(x, torch.Generator().manual_seed(0))
    assert torch.allclose(rep, out, rtol=0, atol=1e-12)
    assert torch.equal(rep, frozen(x, torch.Generator().manual_seed(1)))  # no dropout in the replay
    # with noise: the replay (another draw of z) is close to RIDE's output, and differentiable
    noisy = _ride()
    out, frozen = noisy.transform_frozen(x)
    xg = x.clone().requires_grad_(True)
    rep = frozen(xg, torch.Generator().manual_seed(0), samples=64)
    assert float((rep - out).detach().abs().mean()) < 0.3 * float((out - x).abs().mean())
    (grad,) = torch.autograd.grad(rep.sum(), xg)
    assert float(grad.abs().sum()) > 0


RIDE_GRID = """
dataset = "digits"
arch = "small-cnn"
[train.standard]
epochs = 1
[runtime.ride]
network = "{network}"
[[attacks]]
name = "fgsm"
eps = 0.1
"""


def test_unknown_network_is_refused_in_one_line():
    check_spec(grid.parse(tomllib.loads(RIDE_GRID.format(network="table3"))))
    with pytest.raises(BenchError) as err:
        check_spec(grid.parse(tomllib.loads(RIDE_GRID.format(network="other"))))
    msg = str(err.value)
    assert "\n" not in msg and "network = 'other'" in msg and "'plain', 'table3'" in msg
    with pytest.raises(BenchError, match="network must be one of 'plain', 'table3', got 'other'"):
        defenses.create("ride", network="other")
    with pytest.raises(BenchError, match="Table 3's depths"):
        defenses.create("ride", network="table3", hidden_layers=5)
    with pytest.raises(BenchError, match="Table 3's depths"):
        _ride(hidden_layers=4).purify(torch.zeros(1, 1, 8, 8), [0])  # 4 hidden layers: a 3-channel row
