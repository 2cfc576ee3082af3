"""Bring your own model, defense and attack: checkpoint sources, plugins, bench.evaluate, grid checks."""

from __future__ import annotations

import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bench
from bench.api import worst_case_rows
from bench.core import data, entrypoints
from bench.core.errors import BenchError
from bench.core.registry import Registry
from bench.run.runner import Runner, RunOptions
from bench.spec import grid as grids

# A LeNet-5 in the classic layout (no padding, 5x5 convs, 16*4*4 features), unlike bench's lenet5.
NETS_PY = '''
import torch
from torch import nn


class ClassicLeNet(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.c1 = nn.Conv2d(1, 6, 5)
        self.c2 = nn.Conv2d(6, 16, 5)
        self.f1 = nn.Linear(16 * 4 * 4, 120)
        self.f2 = nn.Linear(120, 84)
        self.f3 = nn.Linear(84, num_classes)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.c1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.c2(x)), 2)
        return self.f3(torch.relu(self.f2(torch.relu(self.f1(x.flatten(1))))))
'''
MEAN, STD = 0.1307, 0.3081


def run_cli(*args: str, capsys) -> tuple[int, str, str]:
    """``bench ARGS`` in this process, through the real entry point (errors: one line, exit 2)."""
    from bench.cli import main

    old = sys.argv
    sys.argv = ["bench", *args]
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv = old
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line(code: int, err: str, needle: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and needle in lines[0], err


def _load_module(path: Path, name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    """nets.py and an untrained checkpoint of it: enough for the checks that run before any cell."""
    folder = tmp_path_factory.mktemp("user_files")
    (folder / "nets.py").write_text(NETS_PY)
    net = _load_module(folder / "nets.py", "user_nets_untrained").ClassicLeNet()
    torch.save({"state_dict": net.state_dict()}, folder / "lenet.pt")
    return folder


@pytest.fixture(scope="module")
def user_lenet(tmp_path_factory, shared_data):
    """nets.py and a checkpoint (``module.``-prefixed, inside {"state_dict"}) the package never saw,
    trained on MNIST test images 2,000-9,999 (the grids evaluate the first 100, which it never saw)."""
    folder = tmp_path_factory.mktemp("user")
    (folder / "nets.py").write_text(NETS_PY)
    net = _load_module(folder / "nets.py", "user_nets_for_training").ClassicLeNet()
    mnist = data.load("mnist", "test", shared_data)
    x, y = (mnist.x[2000:] - MEAN) / STD, mnist.y[2000:]
    torch.manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(2):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 128):
            idx = perm[i : i + 128]
            opt.zero_grad()
            F.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, folder / "lenet.pt")
    return folder


USER_GRID = """
name = "user-lenet"
dataset = "mnist"
limit = 100
[train.mine]
source = "checkpoint"
model = "nets.py:ClassicLeNet"
checkpoint = "lenet.pt"
mean = [0.1307]
std = [0.3081]
[runtime.none]
[[attacks]]
name = "pgd"
eps = 0.1
params = { steps = 20, step_size = 0.01, random_start = false }
[[attacks]]
name = "autoattack"
eps = 0.1
params = { attacks = ["apgd-ce"], n_iter = 10 }
"""


def hand_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int) -> torch.Tensor:
    """Textbook Linf PGD (Madry et al. 2018) without random start."""
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        x_adv = (x_adv.detach() + alpha * grad.sign()).clamp(x - eps, x + eps).clamp(0, 1)
    return x_adv


@pytest.mark.slow
def test_user_checkpoint_grid_matches_hand_pgd(user_lenet, shared_data, tmp_path):
    grid_path = user_lenet / "grid.toml"  # relative paths start at the grid file's folder
    grid_path.write_text(USER_GRID)
    spec = grids.load(str(grid_path))
    runner = Runner(spec, RunOptions(data_dir=shared_data, cache_dir=tmp_path / "cache",
                                     results_dir=tmp_path / "results", tracking=False, device="cpu", progress=False))
    summary = runner.run()
    assert summary.failed == 0, summary.failures
    recs = {r["attack"]: r for r in runner.store.records.values()}
    assert set(recs) == {"pgd", "autoattack"}
    # By hand: the same file, weights and normalisation, outside the harness (no train split needed).
    net = _load_module(user_lenet / "nets.py", "user_nets_by_hand").ClassicLeNet()
    state = torch.load(user_lenet / "lenet.pt", weights_only=True)["state_dict"]
    net.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
    model = nn.Sequential(bench.core.models.Normalize((MEAN,), (STD,)), net.eval())
    test = data.load("mnist", "test", shared_data, limit=100)
    clean = (model(test.x).argmax(1) == test.y).float().mean().item()
    robust = (model(hand_pgd(model, test.x, test.y, 0.1, 0.01, 20)).argmax(1) == test.y).float().mean().item()
    assert clean > 0.85 and recs["pgd"]["clean_acc"] == pytest.approx(clean)
    assert robust < clean - 0.2  # the attack really bites
    assert abs(recs["pgd"]["robust_acc"] - robust) <= 0.01 + 1e-9
    assert recs["autoattack"]["robust_acc"] <= clean
    worst = worst_case_rows(list(runner.store.records.values()))
    assert len(worst) == 1
    assert worst[0]["robust_acc"] <= min(recs["pgd"]["robust_acc"], recs["autoattack"]["robust_acc"])


def test_changed_checkpoint_is_a_new_cell(tmp_path):
    (tmp_path / "w.pt").write_bytes(b"one")
    text = USER_GRID.replace('model = "nets.py:ClassicLeNet"', 'arch = "lenet5"').replace("lenet.pt", "w.pt")
    (tmp_path / "g.toml").write_text(text)
    first = {c.cell_id for c in grids.load(str(tmp_path / "g.toml")).cells()}
    (tmp_path / "w.pt").write_bytes(b"two")
    second = {c.cell_id for c in grids.load(str(tmp_path / "g.toml")).cells()}
    assert first and first.isdisjoint(second)


@pytest.mark.parametrize("edit,needle", [
    (("lenet.pt", "missing.pt"), "missing.pt not found"),
    (('source = "checkpoint"', 'source = "hub"'), "source 'hub' unknown"),
    (('mean = [0.1307]', 'mean = [0.1307]\nepochs = 3'), "unknown keys epochs"),
    (('model = "nets.py:ClassicLeNet"', 'model = "nets.py:NoSuchNet"'), "has no attribute 'NoSuchNet'"),
    (('std = [0.3081]', 'std = "wide"'), "std must be a list of numbers"),
])
def test_bad_source_entries_are_one_line(user_files, tmp_path, capsys, edit, needle):
    for name in ("nets.py", "lenet.pt"):
        (tmp_path / name).write_bytes((user_files / name).read_bytes())
    (tmp_path / "g.toml").write_text(USER_GRID.replace(*edit))
    code, _, err = run_cli("run", "--grid", str(tmp_path / "g.toml"), "--no-tracking", "--dry-run",
                           "--results-dir", str(tmp_path / "r"), capsys=capsys)
    one_line(code, err, needle)


PLUGIN_PY = '''
import torch
from attacks import Attack, register as register_attack
from defenses import RuntimeDefense, register as register_defense


@register_defense("invert-test")
class Invert(RuntimeDefense):
    """Feeds 1 - x to the model (a defense that surely changes predictions)."""

    def __init__(self, strength: float = 1.0):
        self.strength = float(strength)

    @torch.no_grad()
    def predict(self, x):
        return self.model(self.strength * (1 - x) + (1 - self.strength) * x)


@register_attack("corner-test")
class Corner(Attack):
    """Every pixel to the nearer edge of the eps ball's corner."""

    def perturb(self, model, x, y, target, gen):
        return (x + self.eps * torch.where(x > 0.5, 1.0, -1.0)).clamp(0, 1)
'''

PLUGIN_GRID = """
dataset = "digits"
arch = "small-cnn"
limit = 60
plugins = ["plug.py"]
[train.standard]
epochs = 3
[runtime.none]
[runtime.invert-test]
[[attacks]]
name = "corner-test"
eps = 0.2
"""


@pytest.mark.slow
def test_plugin_file_lists_and_runs(tmp_path, capsys):
    (tmp_path / "plug.py").write_text(PLUGIN_PY)
    code, out, _ = run_cli("list", "defenses", "--plugin", str(tmp_path / "plug.py"), capsys=capsys)
    assert code == 0
    line = next(x for x in out.splitlines() if x.startswith("invert-test"))
    assert "runtime" in line and f"[plugin {tmp_path / 'plug.py'}]" in line
    (tmp_path / "g.toml").write_text(PLUGIN_GRID)
    spec = grids.load(str(tmp_path / "g.toml"))
    runner = Runner(spec, RunOptions(cache_dir=tmp_path / "c", results_dir=tmp_path / "r", tracking=False,
                                     device="cpu", progress=False))
    assert runner.run().failed == 0
    recs = {r["runtime_defense"]: r for r in runner.store.records.values()}
    assert recs["none"]["max_perturbation"] == pytest.approx(0.2, abs=1e-6)
    # The plugin defense really changes predictions: inverted digits are mostly misread.
    assert recs["invert-test"]["clean_acc"] < recs["none"]["clean_acc"] - 0.3


@pytest.mark.parametrize("body,needle", [
    ("from attacks import register\n@register('pgd')\nclass P:\n    pass\n",
     "attack 'pgd' is already registered by builtin"),
    ("from attacks import register\n@register('not-an-attack')\ndef f(model, x, y):\n    return x\n",
     "must be a subclass of attacks.Attack"),
    ("import no_such_module_anywhere\n", "failed to import (ModuleNotFoundError"),
])
def test_bad_plugins_are_one_line(tmp_path, capsys, body, needle):
    (tmp_path / "bad.py").write_text(body)
    code, _, err = run_cli("list", "attacks", "--plugin", str(tmp_path / "bad.py"), capsys=capsys)
    one_line(code, err, needle)
    assert str(tmp_path / "bad.py") in err


def test_entry_points_register_with_origin(tmp_path, monkeypatch):
    pkg = tmp_path / "ep_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("def build(num_classes=10, in_channels=1):\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [EntryPoint("my-net", "ep_pkg:build", "advbench.archs")]
    monkeypatch.setattr(entrypoints, "_entry_points", lambda group: eps if group == "advbench.archs" else [])
    reg: Registry = Registry("architecture")
    reg.register("resnet20")(object())
    entrypoints.load_entry_points("advbench.archs", reg)
    assert "my-net" in reg and reg.origin("my-net") == "plugin ep_pkg" and reg.origin("resnet20") == "builtin"
    bad = [EntryPoint("resnet20", "ep_pkg:build", "advbench.archs")]
    monkeypatch.setattr(entrypoints, "_entry_points", lambda group: bad)
    with pytest.raises(BenchError, match="'resnet20' is already registered by builtin"):
        entrypoints.load_entry_points("advbench.archs", reg)


@pytest.mark.parametrize("edit,needle", [
    (("epochs = 1", "epochz = 1"), "[train.standard]: unknown parameter 'epochz'. Did you mean 'epochs'?"),
    (("epochs = 1", 'epochs = "ten"'), "parameter epochs = 'ten' should be an integer"),
    (("eps = 0.1", 'eps = 0.1\nparams = { steps = "ten" }'), "attack 'pgd': parameter steps = 'ten'"),
    (("eps = 0.1", 'eps = 0.1\nparams = { restartz = 2 }'), "unknown parameter 'restartz'"),
])
def test_grid_hyperparameters_checked_before_anything_runs(tmp_path, capsys, edit, needle):
    grid = ('dataset = "digits"\narch = "small-cnn"\n[train.standard]\nepochs = 1\n'
            '[[attacks]]\nname = "pgd"\neps = 0.1\n')
    (tmp_path / "g.toml").write_text(grid.replace(*edit))
    code, _, err = run_cli("run", "--grid", str(tmp_path / "g.toml"), "--no-tracking",
                           "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"), capsys=capsys)
    one_line(code, err, needle)
    assert not (tmp_path / "c").exists() and not (tmp_path / "r").exists()  # nothing trained, nothing written


def test_wrapper_attack_params_checked_against_the_inner_attack():
    from bench.spec.validate import check_attack

    check_attack("eot", {"n": 4, "steps": 5, "eps": 0.1}, "g")  # n is eot's, steps pgd's
    with pytest.raises(BenchError, match=r"attack 'eot' \(inner 'pgd'\): unknown parameter 'stepz'"):
        check_attack("eot", {"n": 4, "stepz": 5}, "g")


@pytest.mark.slow
def test_evaluate_a_model_from_python(digits_model, tmp_path):
    df = bench.evaluate(digits_model, dataset="digits", attacks=["fgsm", {"name": "pgd", "params": {"steps": 10}}],
                        eps=0.1, limit=60, device="cpu", cache_dir=tmp_path / "c", progress=False)
    cells = df[df["attack"] != "worst case"].set_index("attack")
    assert list(cells["status"]) == ["ok", "ok"]
    assert (cells["robust_acc"] < cells["clean_acc"] - 0.1).all()  # both attacks really lower accuracy
    worst = df[df["attack"] == "worst case"]
    assert len(worst) == 1 and worst["robust_acc"].item() <= cells["robust_acc"].min()
    with pytest.raises(BenchError, match="takes a torch.nn.Module"):
        bench.evaluate("resnet32")
