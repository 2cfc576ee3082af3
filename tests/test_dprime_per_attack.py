"""Per-attack D' (issue 29; RMC, ICML 2020, Table 1 and Table 6's Single-Attack row): a D'-building
runtime defense with ``db_attacks = "per-attack"`` builds D' with each cell's own attack, adaptive
cells fall back to PGD D', the records name their D', and the board's clean cell is the mean over
the D' variants."""

from __future__ import annotations

import tomllib

import pytest
import torch

from bench.core.errors import BenchError
from bench.report.board import board, row_clean
from bench.report.leaderboard import notes_under_tables
from bench.run.runner import Runner, RunOptions
from bench.spec import grid
from bench.spec.validate import check_spec

GRID = """
name = "dp"
dataset = "digits"
arch = "small-cnn"
limit = 20
train_limit = 150
seed = 0
[train.standard]
epochs = 1
[runtime.none]
[runtime.webnn]
db_attacks = "per-attack"
db_params = { cw-l2 = { steps = 7 } }
[[attacks]]
name = "fgsm"
eps = 0.1
[[attacks]]
name = "pgd"
eps = 0.1
params = { steps = 5 }
[[attacks]]
name = "pgd-nn"
threat = "adaptive"
eps = 0.1
params = { steps = 3 }
runtime = ["webnn"]
"""


def _spec(text: str) -> grid.GridSpec:
    return grid.parse(tomllib.loads(text), "dp")


def test_each_cell_gets_its_own_dprime_and_adaptive_cells_fall_back_to_pgd():
    extra = '[[attacks]]\nname = "cw-l2"\nruntime = ["webnn"]\n'
    cells = {(c.runtime_defense, c.attack): c for c in _spec(GRID + extra).cells()}
    fgsm, pgd = cells[("webnn", "fgsm")], cells[("webnn", "pgd")]
    assert fgsm.runtime_params["db_attacks"] == ["fgsm"] and fgsm.dprime == "fgsm"
    assert fgsm.runtime_params["db_params"]["eps"] == 0.1
    # the attack's cell budgets: the grid's steps over pgd's digits default (10), the cell's eps
    assert pgd.runtime_params["db_params"] == {"eps": 0.1, "steps": 5, "step_size": 0.075}
    cw = cells[("webnn", "cw-l2")].runtime_params
    assert cw["db_attacks"] == ["cw-l2"] and cw["db_params"]["steps"] == 7  # the grid's cap
    nn = cells[("webnn", "pgd-nn")]
    assert nn.runtime_params["db_attacks"] == ["pgd"] and nn.dprime == "pgd (fallback)"
    assert "db_params" not in nn.runtime_params  # the defense's own PGD defaults apply
    assert cells[("none", "fgsm")].dprime is None and cells[("none", "fgsm")].runtime_params == {}
    assert fgsm.cell_id != pgd.cell_id


def test_a_pgd_cell_whose_dprime_equals_the_fallback_shares_it(monkeypatch, tmp_path):
    """Equal PGD parameters: the pgd cell and the adaptive cells run one runtime configuration (one D',
    one clean stream); unequal ones (GRID: the pgd cell's 5 steps, webnn's digits default) stay apart."""
    same = GRID.replace('db_params = { cw-l2 = { steps = 7 } }',
                        'db_params = { eps = 0.1, steps = 5, step_size = 0.075, cw-l2 = { steps = 7 } }')
    cells = {(c.runtime_defense, c.attack): c for c in _spec(same).cells()}
    pgd, nn = cells[("webnn", "pgd")], cells[("webnn", "pgd-nn")]
    assert pgd.runtime_params == nn.runtime_params and pgd.dprime == "pgd" and nn.dprime == "pgd (fallback)"
    assert cells[("webnn", "fgsm")].runtime_params != nn.runtime_params
    apart = {(c.runtime_defense, c.attack): c for c in _spec(GRID).cells()}
    assert apart[("webnn", "pgd")].runtime_params != apart[("webnn", "pgd-nn")].runtime_params
    # the CIFAR-10 board: RMC's per-dataset PGD D' is the pgd column's own (eps 8/255, 10 steps of 2/255)
    (tmp_path / "cifar10-resnet").mkdir()
    (tmp_path / "cifar10-resnet" / "resnet32-d509ac18.th").touch()  # the grid checks the path exists
    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path))
    board = {(c.runtime_defense, c.attack): c for c in grid.load("cifar10-pretrained").cells()}
    for runtime in ("webnn", "rmc", "rmc-plus"):
        assert board[(runtime, "pgd")].runtime_params == board[(runtime, "pgd-nn")].runtime_params


@pytest.mark.parametrize(("runtime", "value", "needle"), [
    ("deepnn", '"per-attack"', "'deepnn' has no D'"),
    ("webnn", '"per_attack"', "is neither a list of attacks nor \"per-attack\""),
    ("rmc", '"pgd"', "write db_attacks = [\"pgd\"] (a list)"),
])
def test_per_attack_is_refused_where_it_means_nothing(runtime, value, needle):
    text = GRID.replace('[runtime.webnn]\ndb_attacks = "per-attack"', f"[runtime.{runtime}]\ndb_attacks = {value}")
    text = text.replace('runtime = ["webnn"]', f'runtime = ["{runtime}"]')
    with pytest.raises(BenchError) as err:
        check_spec(_spec(text))
    msg = str(err.value)
    assert needle in msg and "\n" not in msg and f"[runtime.{runtime}]" in msg


def test_row_clean_is_the_mean_over_dprime_variants():
    recs = [{"dprime": d, "clean_acc": a, "n": 20, "params": {"runtime": {"db_attacks": [d]}}}
            for d, a in (("fgsm", 0.9), ("pgd", 0.7), ("pgd (fallback)", 0.1))]
    cell = row_clean(recs)
    assert cell["value"] == pytest.approx(0.8) and cell["spread"] == [0.7, 0.9]  # fallback left out
    assert row_clean([{k: v for k, v in r.items() if k != "dprime"} for r in recs])["value"] == 0.9


def test_fgsm_and_pgd_cells_build_different_dprime(tmp_path):
    """The D' of the fgsm cell holds FGSM's examples of D, the pgd cell's PGD's (fast: an untrained
    seeded CNN, 64 training digits)."""
    import defenses
    from attacks import create as create_attack
    from bench.core import data, models
    from bench.run.artifacts import resolve_params

    torch.manual_seed(0)
    model = models.create("small-cnn", 10, 1).eval()
    train = data.load("digits", "train").subset(64)
    cells = {(c.runtime_defense, c.attack): c for c in _spec(GRID).cells()}
    dbs = {}
    for attack in ("fgsm", "pgd"):
        factory = defenses.DEFENSES.get("webnn")
        params = resolve_params(factory, "digits", cells[("webnn", attack)].runtime_params, seed=0,
                                cache_dir=str(tmp_path))
        dbs[attack] = factory(**params).prepare(model, train).database
    f, p = dbs["fgsm"], dbs["pgd"]
    assert torch.equal(f.x[~f.is_adv], p.x[~p.is_adv]) and int(f.is_adv.sum()) == int(p.is_adv.sum()) == 64
    fresh = create_attack("fgsm", eps=0.1, seed=0)(model, train.x, train.y)
    assert (f.x[f.is_adv] - fresh).abs().max() <= 1 / 255  # uint8 storage rounds by at most 1/510
    assert (p.x[p.is_adv] - fresh).abs().max() > 0.05
    for db in (f, p):
        assert (db.x[db.is_adv] - train.x).abs().max() <= 0.1 + 1 / 255


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_a_per_attack_grid_builds_one_dprime_per_attack(tmp_path):
    spec = _spec(GRID.replace("epochs = 1", "epochs = 8\nlr = 0.005").replace("train_limit = 150", "train_limit = 300"))
    runner = Runner(spec, RunOptions(cache_dir=tmp_path / "cache", results_dir=tmp_path / "results",
                                     progress=False, tracking=False))
    runner.run()
    from bench.track.results import load_records

    recs = [r for r in load_records(tmp_path / "results" / "dp.jsonl") if r["runtime_defense"] == "webnn"]
    assert all(r["status"] == "ok" for r in recs), [r.get("error") for r in recs]
    by_attack = {r["attack"]: r for r in recs}
    assert {a: r["dprime"] for a, r in by_attack.items()} == {"fgsm": "fgsm", "pgd": "pgd",
                                                              "pgd-nn": "pgd (fallback)"}
    assert by_attack["fgsm"]["params"]["runtime"]["db_attacks"] == ["fgsm"]
    assert by_attack["pgd-nn"]["params"]["runtime"]["db_attacks"] == ["pgd"]
    dprimes = {(tuple(d.db_attacks), str(d.db_params)) for d in runner.artifacts._runtime.values()
               if hasattr(d, "db_attacks")}
    assert len(dprimes) == 3  # fgsm, pgd at the pgd cell's budgets, the fallback pgd at webnn's defaults

    model = board(load_records(tmp_path / "results" / "dp.jsonl"), spec)
    table = model["threat_models"][0]["tables"][0]
    row = next(r for r in table["rows"] if r["runtime"] == "webnn")
    accs = [by_attack["fgsm"]["clean_acc"], by_attack["pgd"]["clean_acc"]]
    assert min(accs) > 0.5  # a trained model, so the mean below means something
    assert row["clean"]["value"] == pytest.approx(sum(accs) / 2)
    assert row["clean"]["spread"] == [min(accs), max(accs)]
    assert model["dprime_rows"] == ["standard/webnn"]
    assert any("mean over the row's D' variants" in line for line in notes_under_tables(model))


def test_estimate_scales_a_per_attack_dprime_by_its_attacks_budgets():
    """`bench estimate` scales a CW-L2 or JSMA D' by that attack's budgets, not PGD's steps."""
    import defenses
    from bench.run.estimate import prepare_ratio

    webnn = defenses.DEFENSES.get("webnn")
    cw = {"db_attacks": ["cw-l2"], "db_params": {"binary_search_steps": 3, "steps": 50}}
    cw_smoke = {"db_attacks": ["cw-l2"], "db_params": {"binary_search_steps": 1, "steps": 2}}
    assert prepare_ratio(webnn, cw, cw_smoke, "cifar10", 3072)[0] == pytest.approx(75.0)
    jsma = {"db_attacks": ["jsma"], "db_params": {"targeted": True}}  # unset: gamma 0.1 x 3072 / 2 pairs
    ratio, how = prepare_ratio(webnn, jsma, {"db_attacks": ["jsma"], "db_params": {"max_iters": 2}}, "cifar10", 3072)
    assert "max_iters 153/2" in how and ratio >= 153 / 2


def test_dprime_variants_share_the_features_of_d(tmp_path):
    """Every D' on one model and D (one per attack, WebNN's and RMC's alike) reuses one computation of
    D's own features; only the adversarial rows are new; the result equals computing all rows at once."""
    import defenses
    from bench.core import data, models
    from bench.run.artifacts import resolve_params
    from defenses import database

    torch.manual_seed(0)
    model = models.create("small-cnn", 10, 1).eval()
    train = data.load("digits", "train").subset(64)
    cells = {(c.runtime_defense, c.attack): c for c in _spec(GRID).cells()}
    before = dict(database.BUILD_COUNTER)
    dbs = []
    for defense, attack in (("webnn", "fgsm"), ("webnn", "pgd"), ("rmc", "fgsm")):
        factory = defenses.DEFENSES.get(defense)
        over = dict(cells[("webnn", attack)].runtime_params)
        params = resolve_params(factory, "digits", over, seed=0, cache_dir=str(tmp_path))
        dbs.append(factory(**params).prepare(model, train).database)
    assert database.BUILD_COUNTER["clean_features"] == before["clean_features"] + 1
    # RMC's FGSM D' is WebNN's (same model, D, attack, budgets, seed): one file for both
    assert database.BUILD_COUNTER["database"] == before["database"] + 2
    assert database.BUILD_COUNTER["features"] == before["features"] + 2  # the adversarial rows of each
    for db in dbs:
        assert torch.equal(db.features, database.compute_features(model, db.x))
    deepnn = defenses.DEFENSES.get("deepnn")
    deepnn(**resolve_params(deepnn, "digits", {}, seed=0, cache_dir=str(tmp_path))).prepare(model, train)
    deepnn(**resolve_params(deepnn, "digits", {}, seed=0, cache_dir=str(tmp_path))).prepare(model, train)
    assert database.BUILD_COUNTER["clean_features"] == before["clean_features"] + 2  # D unrounded, once
