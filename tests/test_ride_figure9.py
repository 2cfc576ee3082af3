"""RIDE's supplement Figure 9 (Lin, Pfister, Zhang): a fixed against a noisy training target
(``target_noise``) at a random loss masking ratio p (``loss_mask``, the share of pixels kept in each
step's MSE), and the grid ride-figure9-mnist that compares them."""

from __future__ import annotations

import tomllib

import pytest
import torch

import defenses
from bench.core.cache import config_hash
from bench.core.errors import BenchError
from bench.report.grid_figures import figure_series
from bench.spec import grid
from bench.spec.smoke import smoke_spec
from bench.spec.validate import check_spec
from defenses.ride import RIDE, GroupedFCN

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _ride(**over) -> RIDE:
    params = {"iterations": 6, "checkpoints": 2, "lr": 1e-2, "sigma": 0.3, **over}
    return defenses.create("ride", **params)


def _images(n: int, side: int, seed: int = 0, channels: int = 1) -> torch.Tensor:
    return torch.rand(n, channels, side, side, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_only_kept_pixels_enter_the_loss():
    # a hand computation: image 0 keeps errors 1 and 4 of (1, 2, 3, 4), image 1 keeps none
    err = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]).view(1, 2, 2, 2)
    kept = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]).view(1, 2, 2, 2)
    assert float(RIDE.masked_loss(err, 2, kept)) == pytest.approx((1 + 4) / 2)
    assert float(RIDE.masked_loss(err, 2, None)) == pytest.approx(2.5 + 6.5)  # no mask: each image's mean
    # the gradient w.r.t. the net's output is zero exactly on the masked-out pixels
    pred = torch.rand(1, 2, 4, 4, generator=torch.Generator().manual_seed(0), requires_grad=True)
    target = torch.rand(1, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    mask = (torch.rand(1, 2, 4, 4, generator=torch.Generator().manual_seed(2)) < 0.5).float()
    (grad,) = torch.autograd.grad(RIDE.masked_loss((pred - target).pow(2), 2, mask), pred)
    assert torch.all(grad[mask == 0] == 0) and torch.all(grad[mask == 1] != 0)


def test_kept_share_is_about_p_per_pixel_and_per_image():
    ride = _ride(loss_mask=0.8)
    gens = [torch.Generator().manual_seed(s) for s in (5, 6)]
    kept = ride.draw_loss_masks(gens, 50, (3, 28, 28), torch.device("cpu"))
    assert kept.shape == (50, 6, 28, 28) and set(kept.unique().tolist()) == {0.0, 1.0}
    assert 0.79 < float(kept.mean()) < 0.81  # 235,200 draws: the share is within 0.01 of p
    assert torch.equal(kept[:, 0], kept[:, 1]) and torch.equal(kept[:, 0], kept[:, 2])  # a pixel's channels
    alone = ride.draw_loss_masks([torch.Generator().manual_seed(6)], 50, (3, 28, 28), torch.device("cpu"))
    assert torch.equal(kept[:, 3:], alone) and not torch.equal(kept[:, :3], kept[:, 3:])  # image 1's own draws
    assert _ride().draw_loss_masks(gens, 50, (3, 28, 28), torch.device("cpu")) is None  # p = 1: no draw


def _training_steps(ride: RIDE, x: torch.Tensor, monkeypatch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(the net's output, the squared error the loss saw) at every training step of ``ride.purify(x)``."""
    preds, errs = [], []
    call, loss = GroupedFCN.__call__, RIDE.masked_loss

    def spy_call(self, z, masks=None):
        out = call(self, z, masks)
        if torch.is_grad_enabled() and out.requires_grad:  # training, not the estimation pass
            preds.append(out.detach())
        return out

    def spy_loss(err, batch, kept):
        errs.append(err.detach())
        return loss(err, batch, kept)

    monkeypatch.setattr(GroupedFCN, "__call__", spy_call)
    monkeypatch.setattr(RIDE, "masked_loss", staticmethod(spy_loss))
    ride.purify(x, [1, 2])
    assert len(preds) == len(errs) == ride.iterations * ride.checkpoints
    return list(zip(preds, errs))


def test_fixed_target_is_the_input_and_the_noisy_one_is_not(monkeypatch):
    x = _images(2, 8)
    flat = x.reshape(1, 2, 8, 8)
    for pred, err in _training_steps(_ride(checkpoints=1, target_noise=False), x, monkeypatch):
        assert torch.allclose(err, (pred - flat).pow(2), rtol=0, atol=1e-12)  # the target is x itself
    for pred, err in _training_steps(_ride(checkpoints=1), x, monkeypatch):
        assert not torch.allclose(err, (pred - flat).pow(2), atol=1e-3)  # s ~ N(x, sigma)


def test_batch_equals_one_at_a_time_with_both_options():
    # table3 on 8x8: dropout and loss masks come in chunks of 32 steps, so 40 iterations cross a chunk
    ride = _ride(iterations=40, network="table3", target_noise=False, loss_mask=0.8)
    x = _images(3, 8, seed=3)
    batched = ride.purify(x, [11, 12, 13])
    alone = torch.cat([ride.purify(x[i : i + 1], [11 + i]) for i in range(3)])
    assert torch.allclose(batched, alone, rtol=0, atol=1e-9)


# RIDE's output before the options existed (commit 0039d0b), float64, for _ride(network=...) on
# _images(3, 8) with seeds 11-13: the defaults must keep every published RIDE result.
BEFORE = {"plain": 60.00917488106167, "table3": 94.11567983903548}


@pytest.mark.parametrize("network", ["plain", "table3"])
def test_defaults_give_the_results_from_before_the_options(network):
    x = _images(3, 8)
    out = _ride(network=network).purify(x, [11, 12, 13])
    assert float(out.sum()) == pytest.approx(BEFORE[network], rel=1e-9)
    assert torch.equal(out, _ride(network=network, target_noise=True, loss_mask=1.0).purify(x, [11, 12, 13]))
    for option in ({"target_noise": False}, {"loss_mask": 0.8}):  # each option changes the result
        assert not torch.allclose(_ride(network=network, **option).purify(x, [11, 12, 13]), out, atol=1e-4)


def test_frozen_ride_replays_with_both_options():
    # the options change training only: with sigma 0 the replay is RIDE's own estimate, bit for bit
    x = _images(3, 8, seed=1)
    ride = _ride(sigma=0.0, network="table3", target_noise=False, loss_mask=0.9)
    out, frozen = ride.transform_frozen(x)
    assert torch.allclose(frozen(x, torch.Generator().manual_seed(0)), out, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name, value, needle", [
    ("loss_mask", 0, "must be in (0, 1]"), ("loss_mask", 0.0, "must be in (0, 1]"),
    ("loss_mask", 1.5, "must be in (0, 1]"), ("loss_mask", -0.2, "must be in (0, 1]"),
    ("loss_mask", True, "should be a number"), ("loss_mask", "0.9", "should be a number"),
    ("target_noise", 1, "should be true or false"), ("target_noise", "yes", "should be true or false")])
def test_bad_options_are_one_line_at_grid_load_and_in_the_constructor(name, value, needle):
    raw = {"dataset": "digits", "arch": "small-cnn", "train": {"standard": {"epochs": 1}},
           "runtime": {"ride": {name: value}}, "attacks": [{"name": "fgsm", "eps": 0.1}]}
    with pytest.raises(BenchError) as err:
        check_spec(grid.parse(raw))
    assert "\n" not in str(err.value) and needle in str(err.value) and "[runtime.ride]" in str(err.value)
    with pytest.raises(BenchError, match=f"^ride {name}.* must be"):
        defenses.create("ride", **{name: value})


def test_the_grid_loads_with_four_variants_that_differ_in_their_keys():
    spec = grid.load("ride-figure9-mnist")
    check_spec(spec)
    variants = {r: p for r, p in spec.runtime.items() if r.startswith("ride@")}
    assert {(p["target_noise"], p["loss_mask"]) for p in variants.values()} == {
        (False, 0.9), (True, 0.9), (False, 0.8), (True, 0.8)}
    assert all(p["network"] == "table3" and (p["iterations"], p["checkpoints"]) == (100, 2) for p in variants.values())
    cells = [c for c in spec.cells() if c.attack_label == "bpda"]
    assert len(cells) == 4 and len({c.cell_id for c in cells}) == 4  # the options are in the cache keys
    assert len({config_hash(c.runtime_params) for c in cells}) == 4  # ... of the clean predictions too
    assert {f["name"] for f in spec.figures} == {"figure9-bpda", "figure9-fgsm", "figure9-clean"}
    smoke = smoke_spec(spec)  # --smoke keeps the options, caps the budget
    for p in (p for r, p in smoke.runtime.items() if r.startswith("ride@")):
        assert p["iterations"] == 2 and p["checkpoints"] == 1 and "loss_mask" in p and "target_noise" in p


def test_figure9_draws_one_line_per_target_over_p():
    spec = grid.load("ride-figure9-mnist")
    records = []
    for i, (runtime, params) in enumerate(r for r in spec.runtime.items() if r[0].startswith("ride@")):
        for attack in ("bpda", "fgsm"):
            records.append({"status": "ok", "train_defense": "standard", "runtime_defense": runtime,
                            "attack": attack, "threat": "adaptive" if attack == "bpda" else "base", "n": 50,
                            "robust_acc": 0.1 * i + (0.01 if attack == "fgsm" else 0), "clean_acc": 0.5 + 0.1 * i,
                            "params": {"runtime": params}})
    figs = {f["name"]: f for f in spec.figures}
    bpda = {s["label"]: s for s in figure_series(records, figs["figure9-bpda"])}
    # rows in grid order: fixed-p0.9 (0), noisy-p0.9 (1), fixed-p0.8 (2), noisy-p0.8 (3)
    assert bpda.keys() == {"bpda (adaptive), target_noise = false", "bpda (adaptive), target_noise = true"}
    assert bpda["bpda (adaptive), target_noise = false"]["x"] == [0.8, 0.9]
    assert bpda["bpda (adaptive), target_noise = false"]["y"] == pytest.approx([20.0, 0.0])
    assert bpda["bpda (adaptive), target_noise = true"]["y"] == pytest.approx([30.0, 10.0])
    clean = {s["label"]: s for s in figure_series(records, figs["figure9-clean"])}
    assert clean["clean, target_noise = true"]["y"] == pytest.approx([80.0, 60.0])
    assert clean["clean, target_noise = true"]["n"] == [50, 50]


def test_by_is_for_vs_param_figures_only():
    raw = tomllib.loads('dataset = "digits"\narch = "small-cnn"\n[train.standard]\n[runtime.none]\n'
                        '[[attacks]]\nname = "fgsm"\neps = 0.1\n[[figures]]\nkind = "vs-eps"\nby = ["k"]\n')
    with pytest.raises(BenchError, match="by = .* is for vs-param figures only"):
        grid.parse(raw)
