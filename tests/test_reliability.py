"""Worst case over attacks, reliability flags, and fault isolation (NaN logits, out of memory)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import attacks
import defenses
from bench.core.contracts import Attack, RuntimeDefense
from bench.core.errors import BenchError
from bench.report.flags import cell_flags
from bench.report.leaderboard import WORST, build_table, render
from bench.run.diagnostics import zero_grad_fraction
from bench.spec import grid


def rec(cid: str, attack: str, robust: float, per_example: str = "", eps: float | None = 0.1, threat: str = "base",
        runtime: str = "none", train: str = "standard", **extra) -> dict:
    return {"cell_id": cid, "key": f"{train}/{runtime}/{attack}/{threat}/{eps}", "status": "ok", "train_defense": train,
            "runtime_defense": runtime, "attack": attack, "attack_name": attack, "threat": threat, "eps": eps,
            "clean_acc": 0.9, "robust_acc": robust, "per_example": per_example, "n": len(per_example) or 10, **extra}


def test_worst_case_column_is_the_per_example_and_over_attacks():
    # 8 examples, two rows. Row none: fgsm 11110110, pgd 11011110, mim 10111111 -> survive all: 10010110 = 4/8
    # (the mean over attacks would be 6.33/8). deepfool (minimal norm, no eps) and a failed cell are left out.
    table = [
        rec("a", "fgsm", 6 / 8, "11110110"), rec("b", "pgd", 6 / 8, "11011110"), rec("c", "mim", 7 / 8, "10111111"),
        rec("d", "deepfool", 0.0, "00000000", eps=None),
        {**rec("e", "bim", 0.0, "00000000"), "status": "failed"},
        rec("f", "fgsm", 8 / 8, "11111111", runtime="median"), rec("g", "pgd", 5 / 8, "00011111", runtime="median"),
    ]
    df = build_table(table)
    worst = {k: v.split(" ")[0] for k, v in zip(df["runtime"], df[f"{WORST} ? 0.1"])}  # records without a norm
    assert worst == {"none": "50.0", "median": "62.5"}
    assert not any(c.startswith("bim") for c in df.columns)


def test_flags_eps_transfer_zero_grad_and_eot():
    records = [
        rec("p1", "pgd", 0.30, eps=0.05), rec("p2", "pgd", 0.40, eps=0.1), rec("p3", "pgd", 0.10, eps=0.2),
        rec("t1", "pgd", 0.20, eps=0.05, threat="transfer"),
        rec("z", "fgsm", 0.5, zero_grad_frac=0.5),
        rec("r", "pgd", 0.6, threat="adaptive", runtime="ride", randomized=True, eot_samples=0),
        rec("e", "pgd", 0.2, eps=0.3, threat="adaptive", runtime="ride", randomized=True, eot_samples=8),
    ]
    flags = cell_flags(records)
    assert set(flags) == {"p2", "p1", "z", "r"}
    assert "rises with eps" in flags["p2"][0]
    assert "transfer attack pgd is stronger" in flags["p1"][0]
    assert "zero input gradient on 50.0%" in flags["z"][0]
    assert "without EOT" in flags["r"][0]
    assert cell_flags([rec("p1", "pgd", 0.3, eps=0.05), rec("p2", "pgd", 0.2, eps=0.1)]) == {}
    spec = grid.parse({"dataset": "digits", "arch": "small-cnn"}, "g")
    text = render(records, spec)
    assert "40.0 [16–69] †" in text and "rises with eps" in text and "Evaluation looks unreliable" in text


def test_bpda_alone_counts_one_draw_against_a_random_defense_so_the_no_eot_flag_fires():
    # the record's eot_samples once fell back to RIDE's declared EOT draws (4) for bpda, which takes one
    ride = defenses.DEFENSES.create("ride")
    assert attacks.ATTACKS.create("bpda").eot_draws(ride) == 1
    assert attacks.ATTACKS.create("eot").eot_draws(ride) == ride.eot_samples > 1
    assert attacks.ATTACKS.create("eot", n=3).eot_draws(ride) == 3
    r = rec("b", "bpda", 0.6, threat="adaptive", runtime="ride", randomized=True, eot_samples=1)
    assert "without EOT" in cell_flags([r])["b"][0]


def test_zero_grad_fraction():
    x, y = torch.rand(6, 1, 4, 4), torch.arange(6) % 2
    lin = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    assert zero_grad_fraction(lin, x, y) == 0.0
    dead = nn.Sequential(nn.Flatten(), nn.Linear(16, 2), nn.ReLU())
    nn.init.constant_(dead[1].weight, -1.0)
    nn.init.constant_(dead[1].bias, -1.0)
    assert zero_grad_fraction(dead, x, y) == 1.0
    with pytest.raises(BenchError, match="non-finite"):
        zero_grad_fraction(lambda t: torch.full((len(t), 2), float("nan")), x, y)


class _NaNDefense(RuntimeDefense):
    """Returns NaN logits (a broken defense)."""

    def predict(self, x):
        return torch.full((len(x), 10), float("nan"))


class _OOM(Attack):
    """Runs out of memory."""

    def perturb(self, model, x, y, target, gen):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


class _Buggy(RuntimeDefense):
    """A defense bug."""

    def predict(self, x):
        raise IndexError("list index out of range")


GRID = """
name = "faults"
dataset = "digits"
arch = "small-cnn"
limit = 20
train_limit = 200
[train.standard]
epochs = 1
[runtime.none]
[runtime.test-nan]
[runtime.test-buggy]
[[attacks]]
name = "fgsm"
eps = 0.1
[[attacks]]
name = "test-oom"
eps = 0.1
"""


def test_failing_cells_are_recorded_and_the_grid_goes_on(tmp_path, monkeypatch):
    from bench.cli import cli

    defenses.DEFENSES.register("test-nan")(_NaNDefense)
    defenses.DEFENSES.register("test-buggy")(_Buggy)
    attacks.ATTACKS.register("test-oom")(_OOM)
    try:
        (tmp_path / "faults.toml").write_text(GRID)
        monkeypatch.chdir(tmp_path)
        result = CliRunner().invoke(cli, ["run", "--grid", str(tmp_path / "faults.toml"), "--no-tracking",
                                          "--cache-dir", str(tmp_path / "cache")])
    finally:
        for reg, name in ((defenses.DEFENSES, "test-nan"), (defenses.DEFENSES, "test-buggy"),
                          (attacks.ATTACKS, "test-oom")):
            reg._entries.pop(name)
    assert result.exit_code == 1, result.output
    records = {(r["runtime_defense"], r["attack"]): r for r in map(
        json.loads, Path(tmp_path / "results" / "faults.jsonl").read_text().splitlines())}
    assert len(records) == 6
    assert records[("none", "fgsm")]["status"] == "ok"
    assert "zero_grad_frac" in records[("none", "fgsm")]
    assert records[("test-nan", "fgsm")]["error"].startswith("BenchError: non-finite logits")
    assert records[("none", "test-oom")]["error"].startswith("OutOfMemoryError: CUDA out of memory")
    assert records[("test-buggy", "fgsm")]["error"] == "IndexError: list index out of range"
    assert "traceback" in records[("test-buggy", "fgsm")]
    assert "5 cell(s) failed" in result.output
