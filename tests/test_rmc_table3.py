"""RMC paper Table 3 (Wu, Yuan, Wu, ICML 2020, section 4.2): the wide ResNet surrogate and the two
transfer grids (gray box: the target's architecture of another seed; black box: the wide ResNet)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from bench.core import models
from bench.core.archs_wide import WideResNet
from bench.core.errors import BenchError
from bench.run.runner import Runner, RunOptions
from bench.spec import grid

#: Table 3: Acc., Reg. ResNet FGSM / MIM (gray box), Reg. wResNet FGSM / MIM (black box).
TABLE3 = {
    "standard/none": (83.3, 39.5, 21.0, 68.8, 67.2),
    "adv-fgsm/none": (83.2, 73.4, 69.9, 69.4, 67.9),
    "adv-pgd/none": (85.3, 70.5, 68.7, 72.7, 70.4),
    "standard/deepnn": (84.3, 41.8, 20.6, 72.2, 70.5),
    "standard/webnn": (80.2, 45.4, 23.4, 66.7, 65.6),
    "standard/rmc": (85.7, 77.7, 74.4, 78.2, 68.4),
}
COLUMNS = ("clean", "fgsm gray-box (transfer)", "mim gray-box (transfer)", "fgsm black-box (transfer)",
           "mim black-box (transfer)")
WIDE = {"wide-resnet": (32, 10), "wide-resnet-small": (8, 4)}  # arch -> (depth, widen)


def _convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("arch", sorted(WIDE))
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_wide_resnet_builds_for_both_input_shapes(arch, shape):
    torch.manual_seed(0)
    net = models.create(arch, 10, shape[0]).eval()
    with torch.no_grad():
        x = torch.rand(2, *shape)
        feats = net.features(x)
        logits = net(x)
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    assert feats.shape == (2, net.stage_widths[-1])
    assert torch.allclose(net.head(feats), logits)


@pytest.mark.parametrize("arch", sorted(WIDE))
def test_stages_have_widen_times_resnet32s_filters(arch):
    depth, widen = WIDE[arch]
    net, ref = models.create(arch, 10, 3), models.create("resnet32", 10, 3)
    assert isinstance(net, WideResNet) and (net.depth, net.widen) == (depth, widen)
    ref_stages = [ref.net.layer1, ref.net.layer2, ref.net.layer3]
    ref_widths = [_convs(s)[0].out_channels for s in ref_stages]
    assert ref_widths == [16, 32, 64]
    convs = _convs(net)
    assert convs[0].out_channels == ref.net.conv1.out_channels == 16  # the stem is not widened
    units = (depth - 2) // 6
    assert len(convs) == 1 + 3 * 2 * units  # stem + two convs a unit (shortcuts have no parameters)
    stage_out = [convs[1 + 2 * units * s].out_channels for s in range(3)]
    assert stage_out == [widen * w for w in ref_widths]
    assert all(c.out_channels in stage_out for c in convs[1:])
    assert net.linear.in_features == widen * 64


def test_madrys_wide_resnet_has_its_parameter_count():
    # Madry et al.'s CIFAR-10 model (WRN-32-10): 45.9 million parameters
    n = sum(p.numel() for p in models.create("wide-resnet", 10, 3).parameters())
    assert 45.8e6 < n < 46.0e6


@pytest.mark.parametrize("depth, widen", [(10, 1), (2, 4), (8, 0)])
def test_bad_depth_or_widen_is_one_line(depth, widen):
    with pytest.raises(BenchError) as err:
        WideResNet(depth, widen)
    assert "\n" not in str(err.value)


def _transfer(spec: grid.GridSpec) -> dict[str, dict]:
    return {a.label: a.surrogate for a in spec.attacks if a.threat == "transfer"}


@pytest.mark.parametrize("name, wide", [("rmc-table3-cifar10", "wide-resnet"),
                                        ("rmc-table3-fashion-mnist", "wide-resnet-small")])
def test_grids_transfer_from_the_target_arch_of_another_seed_and_from_the_wide_arch(name, wide):
    spec = grid.load(name)
    assert [a.threat for a in spec.attacks] == ["transfer"] * 4
    assert sorted(a.name for a in spec.attacks) == ["fgsm", "fgsm", "mim", "mim"]
    sur = _transfer(spec)
    assert set(sur) == {"fgsm gray-box", "mim gray-box", "fgsm black-box", "mim black-box"}
    for label, s in sur.items():
        if "gray" in label:
            assert s["arch"] == spec.arch and s["seed"] != spec.seed
        else:
            assert s["arch"] == wide
    assert spec.pairs() == [(t, "none") for t in ("standard", "adv-fgsm", "adv-pgd")] + [
        ("standard", r) for r in ("deepnn", "webnn", "rmc")]
    assert len(spec.cells()) == 24


def test_cifar_grid_is_the_papers_protocol_with_table3_as_reference():
    spec = grid.load("rmc-table3-cifar10")
    assert (spec.dataset, spec.arch, spec.limit) == ("cifar10", "resnet32", 1000)
    assert {a.eps for a in spec.attacks} == {(8 / 255,)}
    expected = {f"{row}/{col}": v for row, vals in TABLE3.items() for col, v in zip(COLUMNS, vals)}
    assert spec.reference == expected and len(expected) == 30
    assert set(spec.reference) <= set(grid.reference_keys(spec, full=False))


def test_fashion_grid_has_no_reference_and_fewer_rmc_points():
    spec = grid.load("rmc-table3-fashion-mnist")
    assert spec.dataset == "fashion-mnist" and not spec.reference
    rmc = {c.limit for c in spec.cells() if c.runtime_defense == "rmc"}
    assert rmc == {50} and spec.limit == 100


TINY = """
name = "t3-tiny"
dataset = "digits"
arch = "small-cnn"
limit = 30
seed = 0
[train.standard]
epochs = 3
[runtime.none]
[[attacks]]
name = "fgsm"
label = "fgsm black-box"
threat = "transfer"
eps = 0.2
surrogate = { arch = "wide-resnet-small", seed = 1, params = { epochs = 3 } }
"""


def test_fgsm_from_the_wide_surrogate_lowers_the_targets_accuracy(tmp_path: Path):
    path = tmp_path / "t3-tiny.toml"
    path.write_text(TINY)
    opts = RunOptions(cache_dir=tmp_path / "cache", results_dir=tmp_path / "results", tracking=False,
                      progress=False)
    assert Runner(grid.load(str(path)), opts).run().failed == 0
    (rec,) = [json.loads(line) for line in (tmp_path / "results" / "t3-tiny.jsonl").read_text().splitlines()]
    assert rec["status"] == "ok" and rec["n"] == 30 and rec["threat"] == "transfer"
    assert rec["params"]["surrogate"]["arch"] == "wide-resnet-small"
    assert rec["max_perturbation"] <= 0.2 + 1e-6
    assert rec["clean_acc"] > 0.8
    assert rec["robust_acc"] < rec["clean_acc"] - 0.15, rec  # the transferred examples fool the target
    archs = {torch.load(p, weights_only=True)["arch"] for p in (tmp_path / "cache" / "models").glob("*.pt")}
    assert archs == {"small-cnn", "wide-resnet-small"}  # the surrogate really is the wide network
