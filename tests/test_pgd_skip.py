"""Stream-aware attacks on RMC / RMC+ (PGD-Skip, -Delayed, -Partial; FPA, GMSA) and the runner's
stream protocol, on digits with the digits RMC defaults (CPU)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

import attacks
import defenses
from bench.core.errors import BenchError
from bench.core.stream import attack_mask, stream_order
from bench.run import audit
from bench.run.evaluation import Evaluator
from bench.run.runner import Runner, RunOptions, resolve_params
from bench.spec import grid

EPS = 0.1  # the digits D' eps
N = 40  # headline comparison, digits RMC defaults
N_FAST = 30  # stream-knowledge comparisons, fast-adapting RMC
N_SMALL = 12  # mechanics (exactness, masks, state)
SEED = 0


def _make(name: str, model, train_set, cache_dir, **over):
    factory = defenses.DEFENSES.get(name)
    params = resolve_params(factory, "digits", over, seed=SEED, cache_dir=str(cache_dir))
    return factory(**params).prepare(model, train_set)


def _runner_predict(defense, x: torch.Tensor, seed: int = SEED) -> torch.Tensor:
    """The runner's own stream evaluation (Evaluator.predict), without building a Runner."""
    return Evaluator.predict(SimpleNamespace(device=torch.device("cpu")), defense, x, seed)[0]


def _attack(name: str, defense, **params):
    return attacks.create(name, eps=EPS, seed=SEED, **params).bind(defense)


def _same_state(a: dict, b: dict) -> bool:
    def eq(u, v) -> bool:
        if isinstance(u, dict):
            return u.keys() == v.keys() and all(eq(u[k], v[k]) for k in u)
        if isinstance(u, (list, tuple)):
            return len(u) == len(v) and all(eq(s, t) for s, t in zip(u, v))
        if isinstance(u, torch.Tensor):
            return torch.equal(u, v)
        return u == v

    return eq(a, b)


@pytest.fixture(scope="module")
def cache(nn_cache):
    return nn_cache


@pytest.fixture(scope="module")
def rmc(digits_model, digits_train, cache):
    return _make("rmc", digits_model, digits_train, cache)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """RMC adapts on ~100 tiny images per step: one intra-op thread is several times faster than two
    on a loaded 2-core machine (measured 0.25 s vs 0.75-5 s per stream point)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _stream_accuracies(defense, model, x, y, specs):
    advs = {"pgd": attacks.create("pgd", eps=EPS, seed=SEED)(model, x, y)}
    rounds = {}
    for label, name, params in specs:
        atk = _attack(name, defense, **params)
        advs[label] = atk(model, x, y)
        rounds[label] = getattr(atk, "last_round_acc", None)
    acc = {k: float((_runner_predict(defense, v) == y).float().mean()) for k, v in advs.items()}
    return advs, acc, rounds


@pytest.fixture(scope="module")
def defaults(rmc, digits_model, digits_test):
    """The digits RMC defaults, 40 points: base PGD vs PGD-Skip."""
    x, y = digits_test.x[:N], digits_test.y[:N]
    advs, acc, _ = _stream_accuracies(rmc, digits_model, x, y, [("pgd-skip", "pgd-skip", {})])
    print("\nRMC (digits defaults), 40 points, eps 0.1:", acc)
    return x, advs, acc


@pytest.fixture(scope="module")
def fast(digits_model, digits_train, digits_test, cache):
    """RMC with 10x the digits learning rate (2.5e-3), 30 points. With the defaults the digits
    weights barely drift along the stream, so knowing the stream buys nothing (measured at 40
    points: pgd-skip 0.80 = pgd-skip-delayed q = 40, i.e. PGD on the fixed weights, 0.80)."""
    d = _make("rmc", digits_model, digits_train, cache, lr=2.5e-3)
    x, y = digits_test.x[:N_FAST], digits_test.y[:N_FAST]
    specs = [("pgd-skip", "pgd-skip", {}), ("delayed-all", "pgd-skip-delayed", {"q": N_FAST}),
             ("partial-0.3", "pgd-skip-partial", {"known": 0.3}), ("fpa", "fpa", {"rounds": 1}),
             ("gmsa-avg", "gmsa-avg", {"rounds": 2})]
    advs, acc, rounds = _stream_accuracies(d, digits_model, x, y, specs)
    print("\nRMC (lr 2.5e-3), 30 points, eps 0.1:", acc, rounds)
    return x, advs, acc, rounds


def test_stream_order_is_the_runners():
    order = stream_order(30, 7)
    assert sorted(order.tolist()) == list(range(30))
    assert torch.equal(order, torch.randperm(30, generator=torch.Generator().manual_seed(7)))
    mask = attack_mask(30, 0.4, 7)
    assert int(mask.sum()) == 12 and torch.equal(mask, attack_mask(30, 0.4, 7))
    with pytest.raises(BenchError):
        attack_mask(30, 0.0, 7)


@pytest.mark.slow
def test_pgd_skip_beats_pgd_on_the_fixed_model(defaults):
    # Measured (40 points, eps 0.1): base PGD leaves RMC at 0.925, PGD-Skip at 0.80. Most of the gap
    # is PGD-Skip's last iterate (the first successful iterate, our PGD's output, is undone by the
    # adaptation: pgd-skip with stop_early=True measured 0.925). On an AMD EPYC box the trained model
    # differs in its last bits and measured 0.875 vs 0.80. Assert 3 of 40 examples, counted in
    # integers: 0.875 - 0.075 against a float32 mean of 32/40 missed by one ulp.
    _, _, acc = defaults
    assert round(acc["pgd-skip"] * N) <= round(acc["pgd"] * N) - 3, acc


@pytest.mark.slow
def test_delay_and_partial_knowledge_weaken_pgd_skip(fast):
    # Measured (30 points): pgd-skip 0.733; q = 30 (the fixed weights throughout) 0.833; known = 0.3
    # 0.833. Noise margin: 1 of 30 examples; at least one must be strictly weaker.
    _, _, acc, _ = fast
    assert acc["delayed-all"] >= acc["pgd-skip"] - 1 / N_FAST - 1e-6, acc
    assert acc["partial-0.3"] >= acc["pgd-skip"] - 1 / N_FAST - 1e-6, acc
    assert max(acc["delayed-all"], acc["partial-0.3"]) > acc["pgd-skip"], acc


@pytest.mark.slow
def test_fpa_and_gmsa_return_their_worst_round_and_beat_pgd(fast):
    # The runner's evaluation replays the attack's own stream bit for bit, so its accuracy is the
    # minimum over the rounds the attack evaluated (round 0: PGD on the fixed model). Measured:
    # base PGD 0.933, FPA rounds 0.833 -> 0.767.
    _, _, acc, rounds = fast
    for name in ("fpa", "gmsa-avg"):
        assert acc[name] == pytest.approx(min(rounds[name]), abs=1e-6), (name, acc, rounds)
        assert acc[name] <= rounds[name][0] + 1e-6
        assert acc[name] < acc["pgd"], (name, acc)


@pytest.mark.slow
def test_every_x_adv_passes_the_audit(defaults, fast):
    for x, advs in ((defaults[0], defaults[1]), (fast[0], fast[1])):
        for name, x_adv in advs.items():
            report = audit.audit(x, x_adv, "Linf", EPS)
            assert report.max_perturbation > 0.5 * EPS, name


@pytest.mark.slow
def test_zero_delay_and_full_knowledge_reduce_exactly_to_pgd_skip(rmc, digits_model, digits_test):
    x, y = digits_test.x[:N_SMALL], digits_test.y[:N_SMALL]
    skip = _attack("pgd-skip", rmc)(digits_model, x, y)
    assert torch.equal(_attack("pgd-skip-delayed", rmc, q=0)(digits_model, x, y), skip)
    assert torch.equal(_attack("pgd-skip-partial", rmc, known=1.0)(digits_model, x, y), skip)
    assert not torch.equal(_attack("pgd-skip-delayed", rmc, q=3)(digits_model, x, y), skip)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["rmc", "rmc-plus"])
def test_state_untouched_and_runner_evaluation_unchanged(name, digits_model, digits_train, digits_test, cache):
    x, y = digits_test.x[:8], digits_test.y[:8]
    d = _make(name, digits_model, digits_train, cache)
    d.predict(x[:2])  # some mid-stream state, not the initial one
    before = d.snapshot()
    x_adv = _attack("pgd-skip", d)(digits_model, x, y)
    assert _same_state(before, d.snapshot())
    after_attack = _runner_predict(d, x_adv)
    fresh = _make(name, digits_model, digits_train, cache)  # D' comes from the cache
    assert torch.equal(after_attack, _runner_predict(fresh, x_adv))


@pytest.mark.slow
def test_gmsa_min_leaves_state_and_respects_the_ball(rmc, digits_model, digits_test):
    x, y = digits_test.x[:6], digits_test.y[:6]
    before = rmc.snapshot()
    x_adv = _attack("gmsa-min", rmc, rounds=1, attack_rate=0.5)(digits_model, x, y)
    assert _same_state(before, rmc.snapshot())
    audit.audit(x, x_adv, "Linf", EPS)


@pytest.mark.slow
def test_attack_rate_leaves_other_points_exactly_clean(rmc, digits_model, digits_test):
    x, y = digits_test.x[:N_SMALL], digits_test.y[:N_SMALL]
    atk = _attack("pgd-skip", rmc, attack_rate=0.5)
    result = atk.run(digits_model, x, y)
    x_adv, mask = result.x_adv, result.attacked
    assert int(mask.sum()) == N_SMALL // 2
    assert torch.equal(x_adv[~mask], x[~mask])
    assert bool(((x_adv[mask] - x[mask]).flatten(1).abs().amax(1) > 0.5 * EPS).all())


def test_clear_error_without_a_bound_stateful_defense(digits_model, digits_test):
    x, y = digits_test.x[:2], digits_test.y[:2]
    for name in ("pgd-skip", "pgd-skip-partial", "fpa", "gmsa-min"):
        with pytest.raises(BenchError, match="stateful runtime defense"):
            attacks.create(name, eps=EPS)(digits_model, x, y)
    none = defenses.create("none").prepare(digits_model)
    with pytest.raises(BenchError, match="stateful runtime defense"):
        attacks.create("pgd-skip", eps=EPS).bind(none)(digits_model, x, y)
    with pytest.raises(BenchError):
        attacks.create("pgd-skip-partial", eps=EPS, known=0.0)
    with pytest.raises(BenchError):
        attacks.create("pgd-skip", eps=EPS, attack_rate=1.5)


GRID = """
name = "skip-tiny"
dataset = "digits"
arch = "small-cnn"
limit = 10
seed = 3
[train.standard]
epochs = 8
[runtime.none]
[runtime.rmc]
[[attacks]]
name = "pgd-skip"
threat = "adaptive"
eps = 0.2
params = { attack_rate = 0.5 }
"""


@pytest.mark.slow
def test_runner_runs_a_pgd_skip_cell_and_scores_attack_points_only(tmp_path):
    path = tmp_path / "skip-tiny.toml"
    path.write_text(GRID)
    spec = grid.load(str(path))
    opts = RunOptions(cache_dir=tmp_path / "cache", results_dir=tmp_path / "results", tracking=False, progress=False)
    runner = Runner(spec, opts)
    plan = runner.plan()
    assert [c.runtime_defense for c, _ in plan.skipped] == ["none"]  # applies_to rmc / rmc-plus
    summary = runner.run()
    assert summary.ran == 1 and summary.failed == 0, summary.failures
    (rec,) = [json.loads(line) for line in (tmp_path / "results" / "skip-tiny.jsonl").read_text().splitlines()]
    assert rec["status"] == "ok" and rec["n"] == 10 and rec["n_attacked"] == 5
    mask = torch.tensor([c == "1" for c in rec["attacked"]])
    assert torch.equal(mask, attack_mask(10, 0.5, 3))  # the cell's seed reaches the attack
    assert len(rec["per_example"]) == 5
    assert rec["robust_acc"] == pytest.approx(rec["per_example"].count("1") / 5, abs=1e-6)
    assert 0.0 <= rec["stream_acc"] <= 1.0 and rec["max_perturbation"] <= 0.2 + 1e-6
