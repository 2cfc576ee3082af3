"""The binarization test (bench verify; Zimmermann et al., NeurIPS 2022) on real small models: PGD
passes on a standard tiny-cnn (digits), a crippled PGD fails, discards are counted, refusals are one
line with exit 2."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import defenses
from bench.core import data, models
from bench.core.errors import BenchError
from bench.core.methods import create_attack
from bench.run import verify as V
from tests.test_cli import bench

EPS = 0.1


@pytest.fixture(scope="module")
def tiny_cnn() -> nn.Module:
    """The default grid's standard model: tiny-cnn trained on digits as the grid trains it (30 epochs,
    lr 1e-3, seed 0; about 15 s of one core)."""
    torch.manual_seed(0)
    model = models.create("tiny-cnn", 10, 1)
    model = defenses.create("standard", epochs=30, lr=1e-3, seed=0).train(model, data.load("digits", "train"))
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def _run(model: nn.Module, attack, n: int, **kw) -> V.Outcome:
    x = data.load("digits", "test").x[:n]
    twin, readout = V.binarize(model, x)
    defense = defenses.create("none").prepare(twin)
    out = V.Outcome(defense="standard", attack="pgd", threat="base", norm=attack.norm, eps=attack.eps)
    return V.check_points(out, attack, defense, twin, readout, x, V.Settings(n=n, **kw))


def test_sampled_points_keep_the_ball_and_the_box():
    # a seeded digits-like image: most pixels at 0 or 1, where clipping bites, the rest in between
    x = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(1))
    x = torch.where(x < 0.4, 0.0, torch.where(x > 0.7, 1.0, x))
    gen = torch.Generator().manual_seed(0)
    inner = V.sample_inner(x, 200, "Linf", 0.95 * EPS, gen)
    corners = V.sample_boundary(x, 20, "Linf", EPS, gen)
    sphere = V.sample_boundary(x, 20, "L2", 1.0, gen)
    for pts in (inner, corners, sphere):
        assert float(pts.min()) >= 0 and float(pts.max()) <= 1
    assert float((inner - x).flatten(1).abs().amax(1).max()) <= 0.95 * EPS + 1e-6
    assert torch.allclose((corners - x).flatten(1).abs().amax(1), torch.full((20,), EPS), atol=1e-6)
    # clipping-aware rescaling: on the sphere after clipping to [0, 1], not inside it
    assert torch.allclose((sphere - x).flatten(1).norm(dim=1), torch.ones(20), atol=1e-4)


def test_readout_separates_or_refuses():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(60, 5, generator=gen)
    labels = (z[:, 0] > 1.0).long()  # separable along one feature
    w, b = V.fit_readout(z, labels, closeness=0.9)
    s = z @ w + b
    # every inner point class 0; the boundary moved next to the most confident boundary point
    assert bool((s[labels == 0] < 0).all()) and float(s[labels == 1].max()) > 0
    assert float(s.max() - s.min()) == pytest.approx(1.0, abs=1e-5)  # "fixed" logit rescaling
    # two draws of each point (a random defense): the chosen boundary point is class 1 in both
    z2 = torch.cat([z, z + 0.05 * torch.randn(z.shape, generator=gen)])
    w2, b2 = V.fit_readout(z2, labels.repeat(2), closeness=0.9, repeats=2)
    s2 = (z2 @ w2 + b2).view(2, -1)
    assert bool((s2[:, labels == 0] < 0).all()) and bool((s2[:, labels == 1] > 0).all(0).any())
    # class 1 on both sides of class 0 along one feature: no linear readout separates them
    z1 = torch.tensor([[-2.0], [-1.0], [0.0], [0.1], [1.0], [2.0]])
    assert V.fit_readout(z1, torch.tensor([1, 1, 0, 0, 1, 1]), 0.9) is None


def test_a_last_layer_that_is_not_linear_is_refused():
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Tanh())
    with pytest.raises(BenchError, match="not linear"):
        V.last_layer(net, torch.rand(2, 1, 8, 8))


@pytest.mark.slow
def test_pgd_passes_and_crippled_pgd_fails(tiny_cnn):
    pgd = create_attack("pgd", eps=EPS, steps=10, step_size=0.075, seed=0)  # as the default grid runs it
    strong = _run(tiny_cnn, pgd, n=20)
    assert strong.tested + strong.discarded == 20 and strong.tested >= 15
    assert strong.passed, strong.as_dict()
    crippled = create_attack("pgd", eps=EPS, steps=1, step_size=1e-4, random_start=False, seed=0)
    weak = _run(tiny_cnn, crippled, n=20)
    assert weak.tested >= 15 and not weak.passed and weak.successes <= 2, weak.as_dict()
    assert weak.random_points < 0.05  # random points of the ball are (almost) never class 1


@pytest.mark.slow
def test_discards_are_counted():
    """A one-feature penultimate layer cannot separate 200 points near x from 20 corners of the ball
    for most x: those points are discarded and counted, never scored."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 1), nn.ReLU(), nn.Linear(1, 10)).eval()
    pgd = create_attack("pgd", eps=EPS, steps=10, seed=0)
    out = _run(net, pgd, n=10, inner=200, boundary=20)
    assert out.discarded > 0 and out.tested + out.discarded == 10
    assert sum(out.discard_reasons.values()) == out.discarded


@pytest.mark.parametrize("defense, needle", [
    ("deepnn", "nearest-neighbour vote"), ("rmc", "fine-tunes the network")])
def test_a_defense_the_test_cannot_apply_to_is_one_line_exit_2(tmp_path, defense, needle):
    proc = bench("verify", "--grid", "default", "--defense", defense, "--attack", "pgd", cwd=tmp_path)
    assert proc.returncode == 2, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "does not apply" in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args, needle", [
    (["--defense", "nosuch", "--attack", "pgd"], "no defense 'nosuch'"),
    (["--defense", "standard", "--attack", "nosuch"], "runs no attack 'nosuch'"),
    (["--defense", "standard", "--attack", "jsma"], "norm is L0"),
    (["--defense", "standard", "--attack", "deepfool"], "give the ball with --eps"),
    (["--defense", "standard", "--attack", "pgd", "--n", "0"], "--n must be at least 1"),
    (["--defense", "standard", "--attack", "pgd", "--set", "steps"], "--set takes KEY=VALUE"),
    (["--defense", "standard", "--attack", "pgd", "--set", "nosuch=1"], "bad parameters for attack 'pgd'"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, args, needle):
    proc = bench("verify", *args, cwd=tmp_path)
    assert proc.returncode == 2, proc
    assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_cli_runs_every_matching_cell_of_the_grid(tmp_path):
    """End to end on the default grid (trains its standard tiny-cnn into a fresh cache): the base PGD
    cells at three eps, each on its own binarized copy of the one model, pass; exit 0; JSON out."""
    import json

    proc = bench("verify", "--grid", "default", "--defense", "standard", "--attack", "pgd", "--threat", "base",
                 "--n", "4", "--inner", "99", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["eps"] for r in rows] == [0.1, 0.05, 0.2]
    assert all(r["tested"] + r["discarded"] == 4 and r["passed"] for r in rows)
