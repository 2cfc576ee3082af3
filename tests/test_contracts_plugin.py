"""A stream attack and a stateful defense from a plugin file, written against bench.core.contracts only
(plus bench.core.methods to register them), run in a grid like the built-in ones: the harness reads
them through the declared contract (AttackResult, StreamOutcome, last_delays / last_stats), nothing else."""

from __future__ import annotations

import ast

import pytest

from bench.run.runner import Runner, RunOptions
from bench.spec import grid as grids

PLUGIN_PY = '''
import copy
import time

import torch

from bench.core.contracts import Attack, AttackResult, StatefulDefense, StreamOutcome, project_linf, stream_order
from bench.core.methods import register_attack, register_defense


@register_defense("drift-test")
class Drift(StatefulDefense):
    """Adds ``rate`` x the running mean of the softmax outputs it predicted so far to each point's
    logits: its prediction of a point depends on the points before it."""

    def __init__(self, rate: float = 2.0):
        self.rate = float(rate)

    def prepare(self, model, train_set=None):
        super().prepare(model, train_set)
        self.reset()
        return self

    def reset(self):
        self._sum, self._seen = None, 0

    def snapshot(self):
        return (None if self._sum is None else self._sum.clone(), self._seen)

    def restore(self, state):
        self._sum, self._seen = (None if state[0] is None else state[0].clone()), state[1]

    @property
    def adapted_model(self):
        return self.model

    @torch.no_grad()
    def predict(self, x):
        out, delays, stats = [], [], []
        for i in range(len(x)):
            start = time.perf_counter()
            logits = self.model(x[i : i + 1])
            if self._sum is not None:
                logits = logits + self.rate * self._sum / self._seen
            out.append(logits)
            self.notify_prediction()
            p = logits.softmax(1)
            self._sum = p if self._sum is None else self._sum + p
            self._seen += 1
            delays.append(time.perf_counter() - start)
            stats.append({"adapt_epochs": self._seen})
        self.last_delays, self.last_stats = delays, stats
        return torch.cat(out)


@register_attack("stream-fgsm-test")
class StreamFGSM(Attack):
    """FGSM at each stream point against the defense as it stands there, feeding the defender the
    stream the harness scores (so the result carries the defender's predictions: one pass)."""

    needs_defense = True
    applies_to = (StatefulDefense,)

    def bind(self, defense, *, stream_seed=None):
        super().bind(defense)
        self.order_seed = self.seed if stream_seed is None else int(stream_seed)
        return self

    def run(self, model, x, y, target=None):
        d = self.defense
        saved = d.snapshot()
        d.reset()
        x_adv, pred, delays, stats = x.clone(), torch.empty(len(x), dtype=torch.long), [], []
        try:
            for i in stream_order(len(x), self.order_seed).tolist():
                xi = x[i : i + 1].clone().requires_grad_(True)
                loss = torch.nn.functional.cross_entropy(d.adapted_model(xi), y[i : i + 1])
                (grad,) = torch.autograd.grad(loss, xi)
                x_adv[i : i + 1] = project_linf(x[i : i + 1] + self.eps * grad.sign(), x[i : i + 1], self.eps)
                pred[i] = d.logits(x_adv[i : i + 1]).argmax(1)[0]
                delays += list(d.last_delays)
                stats += list(d.last_stats)
        finally:
            d.restore(saved)
        return AttackResult(x_adv.detach(), stream=StreamOutcome(self.order_seed, pred, delays, stats))
'''

GRID = """
dataset = "digits"
arch = "tiny-cnn"
limit = 40
plugins = ["contract_plugin.py"]
[train.standard]
epochs = 3
[runtime.none]
[runtime.drift-test]
[[attacks]]
name = "stream-fgsm-test"
threat = "adaptive"
eps = 0.2
[[attacks]]
name = "fgsm"
eps = 0.2
"""


def test_the_plugin_imports_nothing_but_the_contracts_and_the_registries():
    imported = {n.module for n in ast.walk(ast.parse(PLUGIN_PY)) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(ast.parse(PLUGIN_PY)) if isinstance(n, ast.Import) for a in n.names}
    assert imported == {"copy", "time", "torch", "bench.core.contracts", "bench.core.methods"}


@pytest.mark.slow
def test_a_plugin_stream_attack_and_stateful_defense_run_in_a_grid(tmp_path, monkeypatch):
    (tmp_path / "contract_plugin.py").write_text(PLUGIN_PY)
    (tmp_path / "g.toml").write_text(GRID)
    runner = Runner(grids.load(str(tmp_path / "g.toml")),
                    RunOptions(cache_dir=tmp_path / "c", results_dir=tmp_path / "r", tracking=False, device="cpu",
                               progress=False))
    replays = []
    predict = runner.evaluation.predict
    monkeypatch.setattr(runner.evaluation, "predict",
                        lambda d, x, *a: replays.append(type(d).__name__) or predict(d, x, *a))
    assert runner.run().failed == 0
    recs = {(r["runtime_defense"], r["attack"]): r for r in runner.store.records.values()}
    stream = recs[("drift-test", "stream-fgsm-test")]
    assert stream["status"] == "ok" and stream["n"] == 40
    # the defender's own per-point outputs reached the record, in stream order (1, 2, ..., n points seen)
    assert stream["per_point"]["adapt_epochs"] == list(range(1, 41))
    assert len(stream["per_point_delay_s"]) == 40
    # the attack works on the stateful defense: measured 0.80 clean -> 0.10 under attack (n = 40)
    assert stream["robust_acc"] < stream["clean_acc"] - 0.3
    # the defense changes predictions relative to the undefended model on the same examples
    assert recs[("drift-test", "fgsm")]["per_example"] != recs[("none", "fgsm")]["per_example"]
    # one pass: the stream attack's StreamOutcome was scored, its stream never replayed (the only
    # streams the harness ran through the defense are the clean pass and the base fgsm cell's)
    assert replays.count("Drift") == 2, replays
