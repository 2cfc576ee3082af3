"""Deep Defense's supplement Table 2: metrics against hand computations, Table 4's networks,
the Parseval retraction, the unrolled DeepFool's goal for misclassified examples, the MNIST split."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.core import data, models
from bench.core.errors import BenchError
from bench.run import model_metrics as metrics
from bench.spec import grid
from defenses.deep_defense import differentiable_deepfool
from defenses.parseval import parseval_retraction


def _linear(w: torch.Tensor, b: float, classes: int = 2) -> nn.Module:
    """Logits (0, w.x + b) (+ zeros): the margin of class 1 over class 0 is w.x + b."""
    lin = nn.Linear(w.numel(), classes)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.zero_()
        lin.weight[1] = w
        lin.bias[1] = b
    return nn.Sequential(nn.Flatten(), lin).eval()


@pytest.fixture()
def linear_case() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, generator=g)
    x = (0.5 + 0.02 * torch.randn(41, 1, 4, 4, generator=g)).clamp(0, 1)  # far from 0 and 1: no clipping
    model = _linear(w, 0.05)
    margin = x.flatten(1) @ w + 0.05
    return model, x, w, margin


def test_deepfool_l2_is_the_distance_to_the_hyperplane(linear_case):
    model, x, w, margin = linear_case
    r, fooled = metrics.deepfool_perturbation(model, x, overshoot=0.02)
    # One linear step reaches the boundary: ||r|| = (|margin| / ||w|| + 1e-4) (1 + overshoot).
    expected = (margin.abs() / w.norm() + 1e-4) * 1.02
    assert fooled.all()
    torch.testing.assert_close(r.flatten(1).norm(dim=1), expected, rtol=1e-4, atol=1e-6)
    out = metrics.deep_defense_metrics(model, x, (margin > 0).long(), cw=None, with_pass=False)
    assert out["deepfool_l2"] == pytest.approx(float(expected.mean()), rel=1e-4)
    assert out["deepfool_rho2"] == pytest.approx(float((expected / x.flatten(1).norm(dim=1)).mean()), rel=1e-4)


def test_fgs_bisection_finds_each_minimal_eps_and_the_50_percent_eps(linear_case):
    model, x, w, margin = linear_case
    y = (margin > 0).long()  # every example correct
    # FGS moves the margin by eps ||w||_1 towards zero: the smallest eps that flips is |margin| / ||w||_1.
    hand = margin.abs() / w.abs().sum()
    eps = metrics.fgs_min_eps(model, x, y, steps=30)
    torch.testing.assert_close(eps, hand, rtol=0, atol=1e-6)
    eps50 = metrics.fgs_eps_at_rate(model, x, y, rate=0.5, steps=30)
    # 41 examples: 50% are misclassified from the 21st smallest flip eps on.
    assert eps50 == pytest.approx(float(hand.sort().values[20]), abs=1e-6)
    sign = metrics._fgs_direction(model, x, y)

    def err(e: float) -> float:
        return float((model((x + e * sign).clamp(0, 1)).argmax(1) != y).float().mean())

    assert err(eps50) >= 0.5 > err(eps50 - 1e-4)


def test_pass_of_an_image_with_itself_is_one_and_alignment_undoes_a_shift():
    from skimage.data import camera
    from skimage.metrics import structural_similarity
    from skimage.transform import resize

    img = torch.from_numpy(resize(camera(), (64, 64), anti_aliasing=True)).float()[None, None]
    assert metrics.pass_score(img, img).item() == pytest.approx(1.0, abs=1e-6)
    shifted = torch.roll(img, shifts=2, dims=3)
    plain = structural_similarity(shifted[0, 0].numpy(), img[0, 0].numpy(), data_range=1.0,
                                  gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert metrics.pass_score(shifted, img).item() > plain + 0.1  # ECC registration recovers the shift


def test_cw_l2_metric_is_close_to_the_exact_minimal_distance(linear_case):
    model, x, w, margin = linear_case
    y = (margin > 0).long()
    out = metrics.deep_defense_metrics(model, x[:8], y[:8], cw={"lr": 0.01, "steps": 200, "binary_search_steps": 6},
                                       with_pass=False)
    exact = float((margin[:8].abs() / w.norm()).mean())
    assert out["cw_success"] == 1.0
    assert exact <= out["cw_l2"] + 1e-4 and out["cw_l2"] < 1.2 * exact


def test_unrolled_deepfool_moves_misclassified_examples_towards_their_label():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 3)).eval()
    x = torch.rand(64, 1, 2, 4)
    pred = model(x).argmax(1)
    target = (pred + 1) % 3  # all "misclassified", the label one class over
    r, _ = differentiable_deepfool(model, x, iterations=10, target=target, create_graph=False)
    assert (model(x + r).argmax(1) == target).float().mean() > 0.95
    r0, _ = differentiable_deepfool(model, x, iterations=10, create_graph=False)
    # Untargeted: the nearest boundary, never farther than the targeted one.
    assert (r0.flatten(1).norm(dim=1) <= r.flatten(1).norm(dim=1) + 1e-5).all()
    assert (model(x + r0).argmax(1) != pred).all()
    r_same, _ = differentiable_deepfool(model, x, iterations=10, target=pred, create_graph=False)
    torch.testing.assert_close(r_same, r0)  # target == prediction: the untargeted perturbation


def test_parseval_retraction_converges_to_orthonormal_rows():
    torch.manual_seed(0)
    lin = nn.Linear(20, 5)
    with torch.no_grad():
        lin.weight.mul_(1.3 / torch.linalg.matrix_norm(lin.weight, ord=2))
    for _ in range(300):
        parseval_retraction(lin, beta=0.1)
    w = lin.weight
    torch.testing.assert_close(w @ w.t(), torch.eye(5), atol=1e-4, rtol=0)


@pytest.mark.parametrize("arch, shapes, in_shape", [
    ("dd-mlp", [(500, 784), (150, 500), (10, 150)], (1, 28, 28)),
    ("dd-lenet", [(20, 1, 5, 5), (50, 20, 5, 5), (500, 800), (10, 500)], (1, 28, 28)),
    ("dd-convnet", [(32, 3, 5, 5), (32, 32, 5, 5), (64, 32, 5, 5), (64, 64, 4, 4), (10, 64, 1, 1)], (3, 32, 32)),
    ("dd-nin", [(192, 3, 5, 5), (160, 192, 1, 1), (96, 160, 1, 1), (192, 96, 5, 5), (192, 192, 1, 1),
                (192, 192, 1, 1), (192, 192, 3, 3), (192, 192, 1, 1), (10, 192, 1, 1)], (3, 32, 32)),
])
def test_architectures_have_table_4_layer_sizes(arch, shapes, in_shape):
    model = models.create(arch, 10, in_shape[0])
    weights = [tuple(m.weight.shape) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert weights == shapes
    x = torch.rand(2, *in_shape)
    torch.testing.assert_close(model.head(model.features(x)), model(x))
    assert model(x).shape == (2, 10)


def test_nin_head_equals_conv_then_global_average():
    torch.manual_seed(0)
    model = models.create("dd-nin", 10, 3).eval()
    x = torch.rand(2, 3, 32, 32)
    body = model.conv[:-2]  # up to the last ReLU, before AvgPool-8
    table4 = model.classifier(body(model.normalize(x))).mean((2, 3))
    torch.testing.assert_close(model(x), table4, atol=1e-5, rtol=1e-5)


def test_mnist_split_is_disjoint_and_fixed(shared_data):
    tr = data.load("mnist-split", "train", shared_data)
    te = data.load("mnist-split", "test", shared_data)
    full = data.load("mnist", "test", shared_data)
    assert len(tr) == len(te) == 5000 and data.family_of("mnist-split") == "mnist"
    torch.testing.assert_close(torch.cat([tr.x, te.x]), full.x)
    assert not torch.equal(tr.x[:100], te.x[:100])


def test_deep_defense_grids_parse_and_bad_metrics_are_refused():
    for name in ("deep-defense-mnist", "deep-defense-mnist-mlp", "deep-defense-cifar10", "deep-defense-cifar10-nin"):
        spec = grid.load(name)
        assert spec.metrics == ("deep-defense",)
        # Adv. Train I is adv-deepfool, Adv. Train II adv-fgsm (tests/test_adv_train_dd.py)
        assert set(spec.train) == {"standard", "parseval", "adv-deepfool", "adv-fgsm", "deep-defense"}
        assert spec.reference["deep-defense/none/pgd"] > spec.reference["standard/none/pgd"]
        assert models.ARCHS.get(spec.arch)
    with pytest.raises(BenchError, match="metrics must be a list"):
        grid.parse({"dataset": "digits", "arch": "small-cnn", "metrics": ["nope"]})



def test_mlp_grid_fine_tunes_deep_defense_for_table_3s_step_count():
    """Table 3's 5 epochs over MNIST's 60,000 training images at batch 100 are 3,000 SGD steps; our
    MLP grid trains on 5,000 images, so the same number of steps takes 60 epochs (issue 19: 5 epochs,
    250 steps, barely moved PGD accuracy). The LeNet grid runs fewer (CPU time), but more than 5."""
    from defenses.finetune import FineTune

    batch = FineTune().batch_size
    assert batch == 100
    mlp = grid.load("deep-defense-mnist-mlp")
    n_train = mlp.train_limit or data.MNIST_SPLIT
    assert mlp.train["deep-defense"]["epochs"] * -(-n_train // batch) == 5 * 60_000 // batch
    assert grid.load("deep-defense-mnist").train["deep-defense"]["epochs"] > 5

METRICS_GRID = """
name = "tiny-dd"
dataset = "digits"
arch = "small-cnn"
limit = 10
seed = 0
metrics = ["deep-defense"]
[train.standard]
epochs = 5
[runtime.none]
[[attacks]]
name = "fgsm"
eps = 0.1
[[attacks]]
name = "deepfool"
[reference]
"standard/none/l2 (DeepFool)" = 1.48
"""


@pytest.mark.slow
def test_grid_with_metrics_records_them_once_per_model_and_shows_columns(tmp_path):
    from bench.report.leaderboard import build_table
    from bench.run.runner import Runner, RunOptions

    path = tmp_path / "tiny-dd.toml"
    path.write_text(METRICS_GRID)
    spec = grid.load(str(path))
    runner = Runner(spec, RunOptions(cache_dir=tmp_path / "cache", results_dir=tmp_path / "results",
                                     tracking=False, progress=False, device="cpu"))
    assert runner.run().failed == 0
    records = list(runner.store.records.values())
    assert len(records) == 2
    fields = ("deepfool_l2", "deepfool_rho2", "fgs_rho_inf", "fgs_eps50", "cw_l2", "pass")
    assert all(r[f] is not None for r in records for f in fields)
    assert records[0]["deepfool_l2"] == records[1]["deepfool_l2"]  # one model, computed once
    assert 0 < records[0]["pass"] < 1 and 0 < records[0]["fgs_eps50"] < 1
    table = build_table(records, spec)
    assert table.loc[0, "l2 (DeepFool)"] == f"{records[0]['deepfool_l2']:.3g} (1.48)"
    assert "PASS" in table.columns and "rho_inf (FGS)" in table.columns


def test_deep_defense_on_a_barely_trained_model_stays_finite():
    """A one-epoch reference misclassifies most images with DeepFool perturbations larger than the
    images; the exp(d rho) term then diverged to NaN at the digits lr (bench estimate's smoke of the
    default grid failed on it). rho is capped at 1 inside that term."""
    import defenses

    train = data.load("digits", "train", None, 512)
    dd = defenses.create("deep-defense", epochs=1, lr=5e-3, pretrain_epochs=1, pretrain_lr=1e-3, iterations=2, seed=0)
    torch.manual_seed(0)
    model = dd.train(models.create("small-cnn", 10, 1), train)
    with torch.no_grad():
        assert torch.isfinite(model(train.x[:64])).all()
