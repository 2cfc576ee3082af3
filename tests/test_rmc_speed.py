"""RMC's optimised inner loop (in-place best-weight copies) against the reference loop it replaced,
bit for bit, and its per-point epoch / stop-reason record (Wu, Yuan, Wu, ICML 2020, Algorithm 1)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from bench.run.runner import resolve_params
from defenses.rmc import RMC, RMCPlus


def reference_fit(self, x, y, x_val, y_val) -> int:
    """The loop as it was before the optimisation: a deep copy of the state dict per improvement."""
    self.adapted.eval()
    best_loss, best_state, stall, done = self._epoch_loss(x_val, y_val), None, 0, 0
    for epoch in range(1, self.max_epochs + 1):
        done = epoch
        perm = torch.randperm(len(x), generator=self.generator)
        for i in range(0, len(x), self.batch_size):
            idx = perm[i : i + self.batch_size]
            loss = F.cross_entropy(self.adapted(x[idx]), y[idx])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        val = self._epoch_loss(x_val, y_val)
        if val < best_loss - 1e-6:
            best_loss, best_state, stall = val, copy.deepcopy(self.adapted.state_dict()), 0
        else:
            stall += 1
            if stall >= self.patience:
                break
    if best_state is not None:
        self.adapted.load_state_dict(best_state)
    self.last_stop = "early" if stall >= self.patience else "cap"
    return done


def reference_prepare(self, model, train_set=None):
    """prepare() as it was: Adam with torch's default (per-parameter loop on CPU)."""
    RMC.prepare(self, model, train_set)
    self.optimizer = torch.optim.Adam(self.adapted.parameters(), lr=self.lr)
    self._initial = self.snapshot()
    return self


class ReferenceRMC(RMC):
    fit_early_stopped = reference_fit
    prepare = reference_prepare


class ReferenceRMCPlus(RMCPlus):
    fit_early_stopped = reference_fit
    prepare = reference_prepare


def _make(cls, model, train_set, cache_dir, **over):
    params = resolve_params(cls, "digits", {"lr": 2.5e-3, **over}, seed=0, cache_dir=str(cache_dir))
    return cls(**params).prepare(model, train_set)


@pytest.fixture(scope="module")
def cache(nn_cache):
    """The session's D' cache: D' is built once and shared by every defense below (and other modules)."""
    return nn_cache


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _equal_states(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for k in a:
        u, v = a[k], b[k]
        if isinstance(u, dict):
            if not _equal_states(u, v):
                return False
        elif isinstance(u, torch.Tensor):
            if not torch.equal(u, v):
                return False
        elif u != v:
            return False
    return True


@pytest.mark.slow
@pytest.mark.parametrize("fast,ref", [(RMC, ReferenceRMC), (RMCPlus, ReferenceRMCPlus)])
def test_optimised_loop_predicts_exactly_as_the_reference(fast, ref, digits_model, digits_train, digits_test,
                                                           cache):
    x = digits_test.x[:6]
    a = _make(fast, digits_model, digits_train, cache)
    b = _make(ref, digits_model, digits_train, cache)  # same D' (from the cache)
    out_a, out_b = a.predict(x), b.predict(x)
    assert torch.equal(out_a, out_b)
    sa, sb = a.snapshot(), b.snapshot()
    assert _equal_states(sa["model"], sb["model"])
    assert _equal_states(sa["optimizer"]["state"], sb["optimizer"]["state"])  # param_groups differ in foreach
    assert all(torch.equal(u, v) for k, u in sa.items() if k.startswith("db_") for v in [sb[k]])
    # the weights did move: the comparison is not between two untouched models
    assert any(not torch.equal(p, q) for p, q in zip(a.adapted.parameters(), digits_model.parameters()))
    assert [s["adapt_epochs"] for s in a.last_stats] == [s["adapt_epochs"] for s in b.last_stats]


def test_snapshot_restore_replays_the_stream_exactly(digits_model, digits_train, digits_test, cache):
    x = digits_test.x[:6]
    d = _make(RMC, digits_model, digits_train, cache)
    d.predict(x[:2])
    state = d.snapshot()
    first = d.predict(x[2:])
    d.restore(state)
    assert torch.equal(d.predict(x[2:]), first)
    d.reset()
    again = d.predict(x)
    assert torch.equal(again[2:], first)


def test_per_point_epochs_and_stop_reasons(digits_model, digits_train, digits_test, cache):
    x = digits_test.x[:4]
    capped = _make(RMC, digits_model, digits_train, cache, max_epochs=2, patience=50)
    capped.predict(x)
    assert len(capped.last_stats) == 4
    for s in capped.last_stats:
        assert s == {"adapt_epochs": 2, "adapt_stop": "cap", "calib_epochs": 2, "calib_stop": "cap"}
    early = _make(RMC, digits_model, digits_train, cache, max_epochs=50, patience=1)
    early.predict(x)
    for s in early.last_stats:  # patience 1: the first epoch that does not improve stops the fit
        assert s["adapt_stop"] == "early" and 1 <= s["adapt_epochs"] < 50, s
        assert s["calib_stop"] == "early" and 1 <= s["calib_epochs"] < 50, s



def test_bfloat16_adaptation_predicts_as_float32_and_refuses_other_precisions(digits_model, digits_train,
                                                                               digits_test, cache):
    """precision = "bfloat16" runs adaptation and calibration under autocast: on a 20-point digits stream
    its predictions equal float32's on 19 of 20 points on a 2-core AMD EPYC (AVX512-BF16); the bar here
    is 18, since bfloat16 kernels (and their rounding) differ between CPUs. The weights moved in both."""
    from bench.core.errors import BenchError

    x = digits_test.x[:20]
    fp32 = _make(RMC, digits_model, digits_train, cache)
    bf16 = _make(RMC, digits_model, digits_train, cache, precision="bfloat16")
    same = (fp32.predict(x).argmax(1) == bf16.predict(x).argmax(1)).float().mean().item()
    assert same >= 0.9 - 1e-6, same
    assert any(not torch.equal(p, q) for p, q in zip(bf16.adapted.parameters(), digits_model.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(bf16.adapted.parameters(), fp32.adapted.parameters()))
    with pytest.raises(BenchError, match="precision must be one of"):
        RMC(precision="float16")


@pytest.mark.slow
def test_min_delta_stops_fits_whose_loss_has_stopped_falling(digits_model, digits_train, digits_test, cache):
    """An epoch improving the validation loss by less than min_delta of the best counts as a stall, so
    fits stop no later (and here sooner) than with the default; 0 is the default and refuses < 0 or >= 1."""
    x = digits_test.x[:4]
    runs = {}
    for delta in (0.0, 0.2):
        d = _make(RMC, digits_model, digits_train, cache, max_epochs=12, patience=2, min_delta=delta)
        d.predict(x)
        runs[delta] = [s["adapt_epochs"] + s["calib_epochs"] for s in d.last_stats]
    assert all(b <= a for a, b in zip(runs[0.0], runs[0.2]))
    assert sum(runs[0.2]) < sum(runs[0.0])
    assert RMC(min_delta=0.0).improvement(3.0) == 1e-6 and RMC(min_delta=0.2).improvement(3.0) == pytest.approx(0.6)
    for bad in (-0.1, 1.0):
        with pytest.raises(Exception, match="min_delta must lie in"):
            RMC(min_delta=bad)
