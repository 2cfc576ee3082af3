"""Deep Defense's Adv. Train I (adv-deepfool), Adv. Train II (adv-fgsm) and the combination with
Deep Defense (deep-defense-fgs): supplement Table 2, section 2 and Figure 6 (Yan et al., NeurIPS 2018)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import attacks
import defenses
from bench.spec import grid


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def _median_deepfool_l2(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Median DeepFool L2 over the correctly classified images (Table 2's l_2 (DeepFool), as a median)."""
    model.eval()
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    x_df = attacks.create("deepfool")(model, x, y)
    return float((x_df - x).flatten(1).norm(dim=1)[ok].median())


@pytest.fixture(scope="module")
def reference(digits_train) -> nn.Module:
    """The reference model: standard training, 20 epochs (1.2 s on one core)."""
    return defenses.create("standard", epochs=20, lr=1e-3, seed=0).train(_mlp(), digits_train)


def test_adv_deepfool_pretrains_exactly_like_standard(digits_train):
    # One fine-tuning step (a batch of the whole set): only the pretraining is under test here.
    adv = defenses.create("adv-deepfool", pretrain_epochs=2, epochs=1, batch_size=len(digits_train.y), seed=0)
    seen: list[dict[str, torch.Tensor]] = []
    finetune_loss = adv.loss

    def snapshot(model, x, y):
        if not seen:  # the weights the first fine-tuning step starts from
            seen.append(copy.deepcopy(model.state_dict()))
        return finetune_loss(model, x, y)

    adv.loss = snapshot
    tuned = adv.train(_mlp(), digits_train)
    ref = defenses.create("standard", epochs=2, lr=1e-3, seed=0).train(_mlp(), digits_train)
    assert seen and all(torch.equal(seen[0][k], v) for k, v in ref.state_dict().items())
    assert not all(torch.equal(tuned.state_dict()[k], v) for k, v in ref.state_dict().items())


def test_fine_tuning_on_deepfool_examples_raises_the_deepfool_l2(reference, digits_train, digits_test):
    """Measured (one thread, digits test images 0-299): reference median 0.572; adv-deepfool 0.653;
    the same fine-tuning on clean images only (clean_weight 1) 0.580."""
    x, y = digits_test.x[:300], digits_test.y[:300]
    ref_l2 = _median_deepfool_l2(reference, x, y)

    def tune(clean_weight: float) -> nn.Module:
        d = defenses.create("adv-deepfool", pretrain_epochs=0, epochs=5, lr=5e-2, clean_weight=clean_weight, seed=0)
        return d.train(copy.deepcopy(reference), digits_train)

    adv, clean_only = tune(0.5), tune(1.0)
    adv_l2 = _median_deepfool_l2(adv, x, y)
    assert adv_l2 > 1.08 * ref_l2, (adv_l2, ref_l2)
    assert adv_l2 > 1.05 * _median_deepfool_l2(clean_only, x, y)  # the DeepFool examples, not more epochs
    with torch.no_grad():
        assert float((adv(x).argmax(1) == y).float().mean()) > 0.85


def test_deep_defense_fgs_adds_the_fgs_cross_entropy(reference, digits_test):
    model = copy.deepcopy(reference).eval()
    x, y = digits_test.x[:16], digits_test.y[:16]
    combined = defenses.create("deep-defense-fgs", eps=0.2, seed=0)
    plain = defenses.create("deep-defense", seed=0)
    total, _ = combined.loss(model, x, y)
    base, _ = plain.loss(model, x, y)
    x_fgs = attacks.create("fgsm", eps=0.2, seed=0)(model, x, y)
    assert (x_fgs - x).abs().max() <= 0.2 + 1e-6 and 0 <= x_fgs.min() and x_fgs.max() <= 1
    fgs_ce = F.cross_entropy(model(x_fgs), y)
    assert fgs_ce > 0.1  # FGS at eps 0.2 really hurts this model, so the term is not negligible
    torch.testing.assert_close(total - base, fgs_ce, rtol=1e-4, atol=1e-5)
    total.backward()  # the combined loss reaches the weights
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", ["deep-defense-mnist", "deep-defense-mnist-mlp", "deep-defense-cifar10",
                                  "deep-defense-cifar10-nin"])
def test_table_2_adv_train_i_is_adv_deepfool_fine_tuned_from_the_reference(name):
    spec = grid.load(name)  # the loader refuses reference keys naming rows or columns that do not exist
    assert {"standard", "parseval", "adv-deepfool", "adv-fgsm", "deep-defense"} <= set(spec.train)
    assert not [k for k in spec.reference if k.startswith("adv-fgsm/")]  # Adv. Train II: no Table 2 numbers
    assert spec.reference["adv-deepfool/none/pgd"] < spec.reference["deep-defense/none/pgd"]
    adv = spec.train["adv-deepfool"]
    # starts from the reference, as the other fine-tuned rows do (CIFAR grids leave standard's epochs at its default)
    assert adv["pretrain_epochs"] == spec.train["standard"].get("epochs", spec.train["deep-defense"]["pretrain_epochs"])


def _rec(train: str, attack: str, eps: float | None, clean: float, robust: float, rho2: float | None = None) -> dict:
    out = {"status": "ok", "train_defense": train, "runtime_defense": "none", "attack": attack, "threat": "base",
           "eps": eps, "norm": "L2" if eps is None else "Linf", "clean_acc": clean, "robust_acc": robust, "n": 100}
    if rho2 is not None:
        out["mean_rho2_success"] = rho2
    return out


def test_figure_6_series_are_the_records_and_draw(tmp_path, monkeypatch):
    """Figure 6's left column (rho_2 against clean accuracy, one line per method over its variants)
    and right column (FGS success rate = 100 - accuracy under FGS, one line per model)."""
    import matplotlib.axes

    from bench.report import grid_figures as figures

    spec = grid.load("deep-defense-figure6-mnist")
    left, right = spec.figures
    recs = [_rec("standard", "deepfool", None, 0.95, 0.0, 0.20),
            _rec("adv-fgsm@eps0.05", "deepfool", None, 0.96, 0.0, 0.22),
            _rec("adv-fgsm@eps0.1", "deepfool", None, 0.94, 0.0, 0.26),
            _rec("deep-defense@c25", "deepfool", None, 0.93, 0.0, 0.31),
            _rec("deep-defense@c5", "deepfool", None, 0.90, 0.0, 0.40),
            _rec("adv-fgsm@eps0.1", "fgsm", 0.05, 0.94, 0.80), _rec("adv-fgsm@eps0.1", "fgsm", 0.1, 0.94, 0.55),
            _rec("deep-defense@c25", "fgsm", 0.1, 0.93, 0.70), _rec("deep-defense@c25", "fgsm", 0.05, 0.93, 0.85)]
    lines = {s["label"]: s for s in figures.figure_series(recs, left)}
    assert set(lines) == {"standard", "adv-fgsm", "deep-defense"}
    assert lines["adv-fgsm"]["x"] == pytest.approx([96, 94]) and lines["adv-fgsm"]["y"] == [0.22, 0.26]
    assert lines["deep-defense"]["x"] == pytest.approx([90, 93])  # rows order: c5 before c25
    assert lines["deep-defense"]["tags"] == ["c5", "c25"] and lines["standard"]["tags"] == [""]
    success = {s["label"]: s for s in figures.figure_series(recs, right)}
    assert success["adv-fgsm@eps0.1/none: fgsm Linf"]["x"] == [0.05, 0.1]
    assert success["adv-fgsm@eps0.1/none: fgsm Linf"]["y"] == pytest.approx([20, 45])
    assert success["deep-defense@c25/none: fgsm Linf"]["y"] == pytest.approx([15, 30])
    drawn = []
    real = matplotlib.axes.Axes.plot

    def spy(self, *a, **kw):
        drawn.append(kw["label"])
        return real(self, *a, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)
    out = figures.write_grid_figures(spec, recs, tmp_path)
    assert [p.name for _, p, _ in out] == ["fig6-rho2-vs-accuracy.png", "fig6-fgs-success-vs-eps.png"]
    assert all(p.is_file() for _, p, _ in out) and len(drawn) == 5


def test_figure_6_grid_is_cpu_sized_and_bad_figure_metrics_are_refused():
    from bench.core.errors import BenchError

    spec = grid.load("deep-defense-figure6-mnist")
    bases = {name.partition("@")[0] for name in spec.train}
    assert bases == {"standard", "adv-fgsm", "deep-defense", "deep-defense-fgs"}
    assert spec.train_limit == 1000 and spec.arch == "dd-mlp"
    with pytest.raises(BenchError, match="metric for rho-vs-acc"):
        grid.parse({"name": "g", "dataset": "digits", "arch": "small-cnn",
                    "figures": [{"kind": "rho-vs-acc", "metric": "robust_acc"}]})
