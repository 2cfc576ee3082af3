"""Declared contracts (issue 12): StatefulDefense (snapshot / restore / reset, adapted_model,
prediction observers) and Purifier (one declared EOT draw count), on digits (CPU)."""

from __future__ import annotations

import json
import tomllib

import pytest
import torch

import attacks
import defenses
from attacks import gmsa
from attacks.pgd_skip import state_copy
from bench.report.flags import cell_flags
from bench.run import audit
from bench.run.runner import Runner, RunOptions, resolve_params, unavailable_reason
from bench.spec import grid, plugins
from bench.track.results import MEASUREMENT_FIELDS
from tests.test_extension_api import one_line, run_cli
from tests.test_pgd_skip import _runner_predict, _same_state

EPS = 0.1
SEED = 0
# Fast RMC on digits: few neighbours and epochs, a large step so the weights really drift.
SMALL_RMC = {"k": 32, "max_epochs": 2, "patience": 1, "lr": 2.5e-3}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _rmc(name, model, train_set, cache_dir, **over):
    factory = defenses.DEFENSES.get(name)
    params = resolve_params(factory, "digits", {**SMALL_RMC, **over}, seed=SEED, cache_dir=str(cache_dir))
    return factory(**params).prepare(model, train_set)


# -- GMSA through observers equals GMSA through the old monkeypatch -------------------------------
def old_stream_with_weights(defense, x, order, record):
    """attacks.gmsa.stream_with_weights as it was before the observer contract: it replaced RMC's
    per-point hook (then ``after_prediction``, now ``refresh_database``) on the instance."""
    weights = {}
    positions = iter(order.tolist())
    original = defense.refresh_database

    def hook(neighbours):
        i = next(positions)
        if record[i]:
            weights[i] = state_copy(defense.adapted)
        original(neighbours)

    defense.refresh_database = hook
    try:
        logits = defense.predict(x[order])
    finally:
        del defense.refresh_database
    pred = torch.empty(len(x), dtype=torch.long)
    pred[order] = logits.argmax(1).cpu()
    return pred, weights


def _run(name, defense, model, x, y, **params):
    atk = attacks.create(name, eps=EPS, seed=SEED, steps=5, **params).bind(defense)
    result = atk.run(model, x, y)
    stream = result.stream_for(len(x), SEED)
    return result.x_adv, atk.last_round_acc, None if stream is None else (stream.pred, stream.delays)


@pytest.mark.slow
@pytest.mark.parametrize("defense_name,attack,params", [
    ("rmc", "gmsa-avg", {"rounds": 2}),
    ("rmc-plus", "fpa", {"rounds": 1, "attack_rate": 0.5}),
])
def test_gmsa_through_observers_equals_the_old_monkeypatch(defense_name, attack, params, digits_model,
                                                           digits_train, digits_test, tmp_path, monkeypatch):
    x, y = digits_test.x[:8], digits_test.y[:8]
    d = _rmc(defense_name, digits_model, digits_train, tmp_path)
    new = _run(attack, d, digits_model, x, y, **params)
    monkeypatch.setattr(gmsa, "stream_with_weights", old_stream_with_weights)
    old = _run(attack, _rmc(defense_name, digits_model, digits_train, tmp_path), digits_model, x, y, **params)
    assert torch.equal(new[0], old[0])  # the same adversarial examples, bit for bit
    assert new[1] == old[1]  # the same per-round stream accuracies
    assert torch.equal(new[2][0], old[2][0]) and len(new[2][1]) == len(old[2][1])  # the scored stream
    assert not torch.equal(new[0], x)


GMSA_GRID = """
name = "gmsa-contract-{tag}"
dataset = "digits"
arch = "small-cnn"
limit = 6
seed = 2
[train.standard]
epochs = 4
[runtime.rmc]
k = 32
max_epochs = 2
patience = 1
lr = 2.5e-3
[[attacks]]
name = "gmsa-min"
threat = "adaptive"
eps = 0.1
params = {{ rounds = 1, steps = 3 }}
"""
TIMING = MEASUREMENT_FIELDS | {"grid", "key"}


@pytest.mark.slow
def test_gmsa_records_equal_record_for_record(tmp_path, monkeypatch):
    def records(tag: str) -> list[dict]:
        spec = grid.parse(tomllib.loads(GMSA_GRID.format(tag=tag)))
        opts = RunOptions(cache_dir=tmp_path / "cache", results_dir=tmp_path / tag, tracking=False,
                          progress=False, log_samples=False)
        assert Runner(spec, opts).run().failed == 0
        lines = (tmp_path / tag / f"{spec.name}.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(s).items() if k not in TIMING} for s in lines]

    new = records("new")
    monkeypatch.setattr(gmsa, "stream_with_weights", old_stream_with_weights)
    old = records("old")
    assert len(new) == 1 and new == old
    assert new[0]["robust_acc"] < new[0]["clean_acc"]


@pytest.mark.slow
def test_observer_sees_the_predicting_weights_and_is_removed(digits_model, digits_train, digits_test, tmp_path):
    d = _rmc("rmc", digits_model, digits_train, tmp_path)
    x = digits_test.x[:3]
    seen = []
    with d.add_prediction_observer(lambda m: seen.append(state_copy(m))):
        logits = d.predict(x)
    assert len(seen) == 3
    for i, w in enumerate(seen):  # each point's logits come from the weights the observer saw
        with torch.no_grad():
            assert torch.allclose(_copy_with(d.adapted_model, w)(x[i : i + 1]), logits[i : i + 1], atol=1e-6), i
    assert not all(torch.equal(a, b) for a, b in zip(seen[0].values(), seen[-1].values()))  # it adapts
    d.predict(x[:1])
    assert len(seen) == 3  # removed on leaving the with-block


def _copy_with(net, state):
    import copy

    out = copy.deepcopy(net).eval()
    out.load_state_dict(state)
    return out


# -- a plugin StatefulDefense works with the stream attacks ---------------------------------------
TOY_STATEFUL = '''
import copy

import torch

from defenses import StatefulDefense, register


@register("{name}")
class EntropyAdapt(StatefulDefense):
    """TENT-like toy: after predicting each point, one SGD step on the prediction's entropy."""

    def __init__(self, lr: float = 3e-3):
        self.lr = float(lr)

    def prepare(self, model, train_set=None):
        super().prepare(model, train_set)
        self.net = copy.deepcopy(model).eval().requires_grad_(True)
        self._initial = self.snapshot()
        return self

    @property
    def adapted_model(self):
        return self.net

    def snapshot(self):
        return copy.deepcopy(self.net.state_dict())

    def restore(self, state):
        self.net.load_state_dict(state)

    def reset(self):
        self.restore(self._initial)

    def predict(self, x):
        out, params = [], [p for p in self.net.parameters()]
        for xi in x.split(1):
            with torch.no_grad():
                out.append(self.net(xi))
            self.notify_prediction()
            with torch.enable_grad():
                p = self.net(xi).softmax(1)
                grads = torch.autograd.grad(-(p * p.clamp_min(1e-12).log()).sum(), params, allow_unused=True)
            with torch.no_grad():
                for w, g in zip(params, grads):
                    if g is not None:
                        w -= self.lr * g
        return torch.cat(out)
'''


def _load_plugin(tmp_path, body: str, name: str):
    path = tmp_path / f"{name}.py"
    path.write_text(body)
    plugins.load_files([path])
    return defenses.DEFENSES.get(name)


def test_plugin_stateful_defense_works_with_pgd_skip(scratch_registries, digits_model, digits_test, tmp_path):
    cls = _load_plugin(tmp_path, TOY_STATEFUL.format(name="toy-entropy"), "toy-entropy")
    d = cls().prepare(digits_model)
    x, y = digits_test.x[:30], digits_test.y[:30]
    d.reset()
    stream_logits = d.predict(x)
    assert not torch.allclose(stream_logits, digits_model(x), atol=1e-3)  # really stateful: the stream adapts it
    d.predict(x[:2])  # mid-stream
    before = d.snapshot()
    atk = attacks.create("pgd-skip", eps=EPS, seed=SEED).bind(d)
    result = atk.run(digits_model, x, y)
    x_adv = result.x_adv
    assert _same_state(before, d.snapshot())  # the attack put the defense's state back
    audit.audit(x, x_adv, "Linf", EPS)
    scored = _runner_predict(d, x_adv)
    assert torch.equal(result.stream_for(len(x), SEED).pred, scored)  # the simulated stream is the scored one
    # measured 0.97 clean -> 0.53 under pgd-skip (30 real digits; +-18 points at n = 30)
    assert (scored == y).float().mean() < (_runner_predict(d, x) == y).float().mean() - 0.3


def test_stream_attacks_pair_with_any_stateful_defense_in_a_grid(scratch_registries, tmp_path):
    _load_plugin(tmp_path, TOY_STATEFUL.format(name="toy-entropy-grid"), "toy-entropy-grid")
    spec = grid.parse(tomllib.loads(
        'dataset = "digits"\narch = "small-cnn"\n[train.standard]\n[runtime.none]\n[runtime.toy-entropy-grid]\n'
        '[runtime.rmc]\n[[attacks]]\nname = "pgd-skip"\nthreat = "adaptive"\neps = 0.1\n'))
    reasons = {c.runtime_defense: unavailable_reason(c) for c in spec.cells()}
    assert reasons["toy-entropy-grid"] is None and reasons["rmc"] is None
    assert "any StatefulDefense" in reasons["none"]


MISSING_RESTORE = '''
from defenses import StatefulDefense, register


@register("half-stateful")
class Half(StatefulDefense):
    def snapshot(self):
        return {}

    def reset(self):
        pass

    @property
    def adapted_model(self):
        return self.model

    def predict(self, x):
        return self.model(x)
'''
CLAIMS_STATEFUL = '''
from defenses import RuntimeDefense, register


@register("duck-stateful")
class Duck(RuntimeDefense):
    stateful = True

    def predict(self, x):
        return self.model(x)
'''


@pytest.mark.parametrize("body,needle", [
    (MISSING_RESTORE, "defense 'half-stateful' is a defenses.StatefulDefense but does not implement restore"),
    (CLAIMS_STATEFUL, "defense 'duck-stateful' sets stateful = True but is not a subclass of defenses.StatefulDefense"),
])
def test_incomplete_stateful_plugin_is_one_line(scratch_registries, tmp_path, capsys, body, needle):
    (tmp_path / "bad.py").write_text(body)
    code, _, err = run_cli("list", "defenses", "--plugin", str(tmp_path / "bad.py"), capsys=capsys)
    one_line(code, err, needle)
    assert str(tmp_path / "bad.py") in err


def test_builtin_defenses_satisfy_their_contracts():
    assert all(defenses.DEFENSES.contract(n, c) is None for n, c in defenses.DEFENSES.items())
    stateful = {n for n, c in defenses.DEFENSES.items()
                if isinstance(c, type) and issubclass(c, defenses.StatefulDefense)}
    assert stateful == {"rmc", "rmc-plus", "rmc-nonmasking", "hindsight-adv"}


# -- Purifier: one declared EOT draw count ----------------------------------------------------------
def _count_transform_batches(defense) -> list[int]:
    sizes: list[int] = []
    inner = defense.transform

    def counted(x):
        sizes.append(len(x))
        return inner(x)

    defense.transform = counted
    return sizes


@pytest.mark.parametrize("n,expected", [(None, 3), (2, 2)])
def test_eot_draws_come_from_the_purifier_unless_set(digits_model, digits_test, n, expected):
    tvm = defenses.create("tvm", drop=0.5, eot_samples=3, workers=1).prepare(digits_model)
    sizes = _count_transform_batches(tvm)
    x, y = digits_test.x[:4], digits_test.y[:4]
    params = {} if n is None else {"n": n}
    atk = attacks.create("eot", eps=EPS, steps=2, seed=SEED, **params).bind(tvm)
    x_adv = atk(digits_model, x, y)
    assert atk.draws() == expected and set(sizes) == {expected * len(x)}  # n x B images per gradient
    audit.audit(x, x_adv, "Linf", EPS)
    # the defended pipeline an adaptive pgd differentiates takes the same declared count
    assert tvm.attack_model().n == 3


def test_eot_without_n_against_a_non_purifier_is_one_clear_error(digits_model, digits_test):
    from bench.core.errors import BenchError

    class Transformed(defenses.RuntimeDefense):
        def transform(self, x):
            return x

    d = Transformed().prepare(digits_model)
    with pytest.raises(BenchError, match="set n"):
        attacks.create("eot", eps=EPS, steps=1).bind(d)(digits_model, digits_test.x[:2], digits_test.y[:2])


def test_eot_samples_is_a_checked_grid_parameter_of_every_purifier():
    from bench.core.errors import BenchError
    from bench.spec.validate import check_spec

    def spec(runtime: str, line: str):
        return grid.parse(tomllib.loads(f'dataset = "digits"\narch = "small-cnn"\n[train.standard]\n'
                                        f'[runtime.{runtime}]\n{line}\n[[attacks]]\nname = "fgsm"\neps = 0.1\n'))

    for name in ("median", "tvm", "ride"):
        check_spec(spec(name, "eot_samples = 2"))
        assert defenses.create(name, eot_samples=2).eot_samples == 2
    with pytest.raises(BenchError, match="Did you mean 'eot_samples'"):
        check_spec(spec("tvm", "eot_sample = 2"))
    with pytest.raises(BenchError, match="eot_samples"):
        defenses.create("tvm", eot_samples=0)


EOT_GRID = """
name = "eot-draws"
dataset = "digits"
arch = "small-cnn"
limit = 8
[train.standard]
epochs = 2
[runtime.tvm]
drop = 0.5
eot_samples = {draws}
workers = 1
[[attacks]]
name = "eot"
threat = "adaptive"
eps = 0.1
params = {{ steps = 2 }}
[[attacks]]
name = "pgd"
threat = "adaptive"
eps = 0.1
params = {{ steps = 2 }}
"""


@pytest.mark.slow
@pytest.mark.parametrize("draws", [3, 1])
def test_runner_records_and_reliability_read_the_declared_draws(tmp_path, draws):
    spec = grid.parse(tomllib.loads(EOT_GRID.format(draws=draws)))
    opts = RunOptions(cache_dir=tmp_path / "cache", results_dir=tmp_path / "r", tracking=False, progress=False,
                      log_samples=False)
    runner = Runner(spec, opts)
    assert runner.run().failed == 0
    recs = [r for r in runner.store.records.values() if r["runtime_defense"] == "tvm"]  # not the implicit none
    assert sorted(r["attack_name"] for r in recs) == ["eot", "pgd"]
    assert {r["eot_samples"] for r in recs} == {draws}  # the eot attack and adaptive pgd alike
    flagged = cell_flags(recs)
    no_eot = {cid for cid, reasons in flagged.items() if any("without EOT" in s for s in reasons)}
    assert no_eot == ({r["cell_id"] for r in recs} if draws == 1 else set())


# -- a plugin Purifier pairs with bpda and eot ------------------------------------------------------
TOY_PURIFIER = '''
import torch

from defenses import Purifier, register


@register("{name}")
class DitherQuantise(Purifier):
    """Bit-depth reduction after a random dither: a toy randomised purifier. ``**kw`` forwards to
    Purifier (eot_samples), so the runner must not hand it seed or cache_dir."""

    randomized = True

    def __init__(self, bits: int = 2, **kw):
        super().__init__(**kw)
        self.bits = int(bits)

    def transform(self, x):
        levels = 2 ** self.bits - 1
        dither = (torch.rand_like(x) - 0.5) / levels
        return torch.round((x + dither).clamp(0, 1) * levels) / levels
'''


def test_plugin_purifier_pairs_with_bpda_and_eot_and_gets_no_foreign_params(scratch_registries, tmp_path):
    cls = _load_plugin(tmp_path, TOY_PURIFIER.format(name="toy-dither"), "toy-dither")
    spec = grid.parse(tomllib.loads(
        'dataset = "digits"\narch = "small-cnn"\n[train.standard]\n[runtime.none]\n[runtime.toy-dither]\n'
        '[runtime.median]\n[[attacks]]\nname = "bpda"\nthreat = "adaptive"\neps = 0.1\n'
        '[[attacks]]\nname = "eot"\nthreat = "adaptive"\neps = 0.1\n'))
    reasons = {(c.runtime_defense, c.attack): unavailable_reason(c) for c in spec.cells()}
    for attack in ("bpda", "eot"):
        assert reasons[("toy-dither", attack)] is None and reasons[("median", attack)] is None
        assert "any Purifier" in reasons[("none", attack)]
    # **kw that forwards to Purifier takes only what Purifier takes (the MRO rule of bench.spec.validate)
    assert resolve_params(cls, "digits", {"bits": 3}, seed=SEED, cache_dir=str(tmp_path)) == {"bits": 3}

    def open_factory(**kw):
        return kw

    assert resolve_params(open_factory, "digits", {}, seed=SEED) == {"seed": SEED}  # a real **kw takes all


def test_bpda_and_eot_break_a_plugin_purifier(scratch_registries, digits_model, digits_test, tmp_path):
    cls = _load_plugin(tmp_path, TOY_PURIFIER.format(name="toy-dither-atk"), "toy-dither-atk")
    d = cls(bits=2, eot_samples=4).prepare(digits_model)
    x, y = digits_test.x[:40], digits_test.y[:40]
    torch.manual_seed(SEED)
    clean = (d.predict(x).argmax(1) == y).float().mean().item()
    for name in ("bpda", "eot"):
        atk = attacks.create(name, eps=2 * EPS, steps=10, seed=SEED).bind(d)
        x_adv = atk(digits_model, x, y)
        audit.audit(x, x_adv, "Linf", 2 * EPS)
        robust = (d.predict(x_adv).argmax(1) == y).float().mean().item()
        # +-16 points at n = 40; at eps 0.1 both took 97.5% to 72.5% (as plain pgd did), 0.2 goes further
        assert robust < clean - 0.4, (name, clean, robust)
    assert attacks.create("eot", eps=EPS).bind(d).draws() == 4  # the plugin's declared draws
