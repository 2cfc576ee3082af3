"""Optimisation traces and the indicators of attack failure (Pintor et al., NeurIPS 2022) on the
digits CNN: a gradient-masking quantiser, a randomized input transform, silent success, the record
fields and the leaderboard / check lines that read them."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from attacks.pgd_skip import StreamPGD
from bench.core.approx import EOT
from bench.core.contracts import AttackResult
from bench.core.methods import ATTACKS
from bench.report.check import indicator_problems
from bench.report.indicators import indicator_lines
from bench.run import indicators as ind
from tests.conftest import accuracy


@pytest.fixture(scope="module")
def points(digits_test):
    return digits_test.x[:64], digits_test.y[:64]


def _fooled(model, x, y) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1) != y


@pytest.mark.parametrize("name,params", [("pgd", {"eps": 0.1}), ("bim", {"eps": 0.1}), ("mim", {"eps": 0.1}),
                                         ("pgd-l2", {"eps": 1.0}), ("fgsm", {"eps": 0.1}),
                                         ("pgd", {"eps": 0.1, "restarts": 2, "batch_size": 40})])
def test_traces_have_their_shapes_and_first_success_matches_x_adv(digits_model, points, name, params):
    x, y = points
    attack = ATTACKS.create(name, **params)
    res = attack.run(digits_model, x, y)
    steps = attack.steps * getattr(attack, "restarts", 1)
    assert res.loss_trace.shape == (steps, len(x)) and res.first_success.shape == (len(x),)
    assert torch.isfinite(res.loss_trace).all()
    fs = res.first_success
    assert bool(((fs >= -1) & (fs < steps)).all()) and bool((fs >= 0).any())
    # the returned point of an example that was adversarial at some step is adversarial
    assert bool(_fooled(digits_model, res.x_adv, y)[fs >= 0].all())
    # the trace's loss of that step is the loss of the returned point (lower = closer to adversarial)
    with torch.no_grad():
        own = attack.attack_loss(digits_model(res.x_adv), y, None)
    hit = (fs >= 0).nonzero().squeeze(1)
    assert torch.allclose(res.loss_trace[fs[hit], hit], own[hit], atol=1e-4)
    delta = (res.x_adv - x).flatten(1)
    size = delta.abs().amax(1) if attack.norm == "Linf" else delta.norm(dim=1)
    assert float(size.max()) <= attack.eps + 1e-5 and 0 <= float(res.x_adv.min()) and float(res.x_adv.max()) <= 1


def test_an_earlier_adversarial_iterate_is_returned_not_the_last(digits_model, points):
    x, y = points
    kw = {"eps": 0.15, "step_size": 0.3, "steps": 8, "seed": 3}  # steps larger than the ball: iterates bounce
    best = ATTACKS.create("pgd", **kw).run(digits_model, x, y)
    last = StreamPGD(**kw).run(digits_model, x, y).x_adv  # same path, returns the last iterate
    was = best.first_success >= 0
    silent = was & ~_fooled(digits_model, last, y)
    assert int(silent.sum()) >= 1  # some paths left the adversarial region again
    assert bool(_fooled(digits_model, best.x_adv, y)[was].all())
    order = torch.argsort((~silent).int(), stable=True)  # the indicator judges the first JUDGE_POINTS
    x, y, last = x[order], y[order], last[order]
    best = AttackResult(best.x_adv[order], loss_trace=best.loss_trace[:, order],
                        first_success=best.first_success[order])
    clean_ok = ~_fooled(digits_model, x, y)
    pgd = ATTACKS.create("pgd", **kw)
    with torch.no_grad():
        pred_last, pred_best = digits_model(last).argmax(1), digits_model(best.x_adv).argmax(1)
    on_last = ind.compute(pgd, digits_model, x, y, last, pred_last, clean_ok, result=best, transfer=False)
    on_best = ind.compute(pgd, digits_model, x, y, best.x_adv, pred_best, clean_ok, result=best, transfer=False)
    assert on_last["indicators"]["silent_success"]["fired"]
    assert not on_best["indicators"]["silent_success"]["fired"]
    assert "best iterate" in on_last["indicators"]["silent_success"]["remedy"]


def test_masked_gradients_fire_and_bpda_breaks_them(digits_model, points):
    x, y = points
    quantise = lambda z: torch.round(z * 8) / 8  # noqa: E731 - zero gradient almost everywhere
    masked = lambda z: digits_model(quantise(z))  # noqa: E731
    clean = accuracy(masked, x, y)
    pgd = ATTACKS.create("pgd", eps=0.2)
    res = pgd.run(masked, x, y)
    assert accuracy(masked, res.x_adv, y) >= clean - 0.05  # PGD learns nothing from zero gradients
    out = ind.compute(pgd, masked, x, y, res.x_adv, masked(res.x_adv).argmax(1), masked(x).argmax(1) == y,
                      result=res, transfer=False)
    grad = out["indicators"]["unavailable_gradients"]
    assert grad["fired"] and grad["value"] > 0.9 and "BPDA" in grad["remedy"]
    bpda = ATTACKS.create("bpda", eps=0.2).bind(SimpleNamespace(model=digits_model, transform=quantise))
    res = bpda.run(masked, x, y)
    assert res.loss_trace is not None  # the wrapper passes the inner attack's trace through
    assert accuracy(masked, res.x_adv, y) <= clean - 0.5  # the remedy breaks it
    out = ind.compute(bpda, masked, x, y, res.x_adv, masked(res.x_adv).argmax(1), masked(x).argmax(1) == y,
                      result=res, transfer=True)
    assert not out["indicators"]["unavailable_gradients"]["fired"]
    assert not out["indicators"]["unconstrained_failure"]["fired"]


def test_random_transform_fires_unstable_predictions_and_eot_breaks_it(digits_model, points):
    x, y = points[0][:48], points[1][:48]
    noisy = lambda z: (z + 0.3 * (torch.rand(z.shape) * 2 - 1)).clamp(0, 1)  # noqa: E731
    random_model = lambda z: digits_model(noisy(z))  # noqa: E731
    judge = EOT(random_model, 16)  # the defense's expected prediction
    defense = SimpleNamespace(model=digits_model, transform=noisy)
    torch.manual_seed(0)
    one = ATTACKS.create("bpda", eps=0.15).bind(defense)
    adv_one = one.run(random_model, x, y).x_adv
    unstable = ind.unstable_predictions(*ind.attacked_pair(one, random_model), x, adv_one, y, None,
                                        torch.Generator().manual_seed(1))
    assert unstable["fired"] and "EOT" in ind.REMEDIES["unstable_predictions"]
    torch.manual_seed(0)
    eot = ATTACKS.create("eot", eps=0.15, n=8).bind(defense)
    adv = eot.run(random_model, x, y).x_adv
    torch.manual_seed(1)
    assert accuracy(judge, adv, y) <= accuracy(judge, adv_one, y) - 0.1  # the remedy is stronger
    again = ind.unstable_predictions(*ind.attacked_pair(eot, random_model), x, adv, y, None,
                                     torch.Generator().manual_seed(1))
    assert again["value"] < unstable["value"]  # averaging the draws steadies the loss
    # deterministic: the same CNN without the noise barely moves under the same noise
    assert not ind.unstable_predictions(ATTACKS.create("pgd", eps=0.15), digits_model, x, adv, y, None,
                                        torch.Generator().manual_seed(1))["fired"]


def test_a_deterministic_model_and_a_working_attack_fire_little(digits_model, points):
    x, y = points
    pgd = ATTACKS.create("pgd", eps=0.1)
    res = pgd.run(digits_model, x, y)
    with torch.no_grad():
        pred, clean_ok = digits_model(res.x_adv).argmax(1), digits_model(x).argmax(1) == y
    out = ind.compute(pgd, digits_model, x, y, res.x_adv, pred, clean_ok, result=res, transfer=False)
    fired = {k for k, v in out["indicators"].items() if v["fired"]}
    assert not fired & {"unavailable_gradients", "unstable_predictions", "silent_success", "unconstrained_failure"}
    assert out["indicators"]["unconstrained_failure"]["n"] == ind.UNBOUNDED_POINTS
    assert out["indicators_fired"] == len(fired) and out["indicator_seconds"] >= 0
    # a crippled attack (one step of 1e-4) fails even unbounded: the attack itself is broken
    weak = ATTACKS.create("pgd", eps=0.1, steps=1, step_size=1e-4, random_start=False)
    res = weak.run(digits_model, x, y)
    with torch.no_grad():
        pred = digits_model(res.x_adv).argmax(1)
    out = ind.compute(weak, digits_model, x, y, res.x_adv, pred, clean_ok, result=res, transfer=False)
    assert out["indicators"]["unconstrained_failure"]["fired"]


def test_leaderboard_lines_and_the_check_read_the_record_fields():
    entry = {"fired": True, "value": 0.25, "n": 40, "remedy": "more steps or a larger step size"}
    rec = {"status": "ok", "key": "standard/none/pgd/base/0.1", "train_defense": "standard", "runtime_defense": "none",
           "indicators": {"incomplete_optimisation": entry}, "indicators_fired": 1}
    lines = indicator_lines([rec, {**rec, "key": "k2", "indicators_fired": 0, "indicators": {}}])
    text = "\n".join(lines)
    assert "fired on 1 of 2 measured cells" in text and "standard + none: 1 fired" in text
    assert "incomplete optimisation (25% of 40 points): more steps" in text
    assert indicator_problems(rec) == []
    assert indicator_problems({**rec, "indicators": {}}) and indicator_problems({"key": "k", "status": "ok"})
    assert indicator_problems({**rec, "per_point": {}}) == []  # stream cells carry none


def test_mlflow_gets_each_indicator_as_two_metrics():
    from bench.track.tracker import indicator_metrics

    rec = {"indicators": {"silent_success": {"fired": True, "value": 0.5, "n": 4, "remedy": "r"}}}
    assert indicator_metrics(rec) == {"indicator.silent_success.fired": 1.0, "indicator.silent_success.value": 0.5}
    assert indicator_metrics({}) == {}


def test_indicators_do_not_depend_on_which_cell_scoring_the_examples_came_first(digits_model, points):
    """Cells scoring the same examples on different runtime defenses share a memo; what they record
    must not depend on their order (the Ray executor runs them in another order than the local one)."""
    x, y = points
    attack = ATTACKS.get("pgd")(eps=0.1, steps=5)
    result = attack.run(digits_model, x, y)
    with torch.no_grad():
        pred = digits_model(result.x_adv).argmax(1)
        clean = digits_model(x).argmax(1) == y
    other = clean.clone()
    other[6:] = False  # a defense that misreads all but a handful of the clean points

    def records(order):
        memo, out = {}, {}
        for name, ok in order:
            out[name] = ind.compute(attack, digits_model, x, y, result.x_adv, pred, ok, result=result,
                                    transfer=False, memo=memo)["indicators"]
        return out

    forward = records([("none", clean), ("defended", other)])
    backward = records([("defended", other), ("none", clean)])
    assert forward == backward


def test_jsma_unbounded_may_change_every_feature_and_fools_every_point(digits_model, points):
    """JSMA's budget is gamma, not eps: its unconstrained check must lift gamma, or a capped JSMA
    fires "unconstrained failure" on a model it breaks (it did on 5 of 7 default-grid rows)."""
    x, y = points
    jsma = ATTACKS.create("jsma", gamma=0.05)  # 1 pixel pair on 8x8 digits: most points survive
    free = jsma.unbounded(x.shape[1:])
    assert (free.gamma, jsma.gamma) == (1.0, 0.05) and free is not jsma
    res = jsma.run(digits_model, x, y)
    with torch.no_grad():
        pred, clean_ok = digits_model(res.x_adv).argmax(1), digits_model(x).argmax(1) == y
    assert float((pred == y)[clean_ok].float().mean()) > 0.5  # the capped attack leaves most correct
    out = ind.compute(jsma, digits_model, x, y, res.x_adv, pred, clean_ok, result=res, transfer=False)
    entry = out["indicators"]["unconstrained_failure"]
    assert not entry["fired"] and entry["value"] <= ind.UNBOUNDED_MAX, entry


def test_unbounded_grows_eps_and_step_of_a_wrapped_inner_attack():
    bpda = ATTACKS.create("bpda", attack="pgd", eps=0.1, step_size=0.025)
    free = bpda.unbounded((1, 8, 8))
    assert free.inner.eps == pytest.approx(1.0) and free.inner.step_size == pytest.approx(0.25)
    assert bpda.inner.eps == pytest.approx(0.1) and bpda.eps == pytest.approx(0.1)  # the cell's own is untouched
