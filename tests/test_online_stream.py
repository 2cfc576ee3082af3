"""One-pass stream attacks: where the attack's own simulation is the scored stream (PGD-Skip,
PGD-Skip-Delayed, FPA / GMSA's returned round), the runner scores the attack's predictions instead of
replaying the stream, and every record equals the two-pass one (RMC paper, Section 5.2)."""

from __future__ import annotations

import json

import pytest

from bench.core.contracts import AttackResult
from bench.run.evaluation import Evaluator
from bench.run.runner import Runner, RunOptions
from bench.spec import grid
from bench.track.results import MEASUREMENT_FIELDS

GRID = """
name = "online-tiny"
dataset = "digits"
arch = "small-cnn"
limit = 6
seed = 5
[train.standard]
epochs = 6
[runtime.rmc]
lr = 2.5e-3
max_epochs = 3
[runtime.rmc-plus]
lr = 2.5e-3
max_epochs = 3
[[attacks]]
name = "pgd-skip"
threat = "adaptive"
eps = 0.1
params = { attack_rate = 0.5 }
[[attacks]]
name = "pgd-skip-delayed"
threat = "adaptive"
eps = 0.1
params = { q = 2 }
[[attacks]]
name = "fpa"
threat = "adaptive"
eps = 0.1
params = { rounds = 1 }
[[attacks]]
name = "pgd-skip-partial"
threat = "adaptive"
eps = 0.1
params = { known = 0.5, chunk = 2 }
"""

TIMING = MEASUREMENT_FIELDS


def _run(tmp_path, name: str, monkeypatch, two_pass: bool) -> tuple[dict[str, dict], int]:
    path = tmp_path / "online-tiny.toml"
    path.write_text(GRID)
    replays = []
    predict = Evaluator.predict

    def counting(self, defense, x, seed, *rest):
        replays.append(1)
        return predict(self, defense, x, seed, *rest)

    with monkeypatch.context() as m:
        m.setattr(Evaluator, "predict", counting)
        if two_pass:
            m.setattr(AttackResult, "stream_for", lambda self, n, seed: None)
        opts = RunOptions(cache_dir=tmp_path / "cache", results_dir=tmp_path / name, tracking=False, progress=False)
        summary = Runner(grid.load(str(path)), opts).run()
    assert summary.failed == 0, summary.failures
    lines = (tmp_path / name / "online-tiny.jsonl").read_text().splitlines()
    records = {r["cell_id"]: r for r in map(json.loads, lines)}
    return records, len(replays)


@pytest.mark.slow
def test_one_pass_stream_records_equal_the_two_pass_ones(tmp_path, monkeypatch):
    one, one_calls = _run(tmp_path, "one", monkeypatch, two_pass=False)
    two, two_calls = _run(tmp_path, "two", monkeypatch, two_pass=True)
    assert len(one) == len(two) == 8 and one.keys() == two.keys()
    for cid, rec in one.items():
        a = {k: v for k, v in rec.items() if k not in TIMING}
        b = {k: v for k, v in two[cid].items() if k not in TIMING}
        assert a == b, cid
        assert ("delay_per_point_s" in rec) == ("delay_per_point_s" in two[cid])
    # The first run computes the two clean streams (rmc, rmc-plus) and leaves them in the shared
    # cache, where the second finds them (its records equal all the same). The two-pass run replays
    # every attack cell's stream, the one-pass run only pgd-skip-partial's (two cells).
    assert one_calls == 2 + 2 and two_calls == 8
    # Something was attacked: the comparison is not between two trivial streams.
    assert any(r["robust_acc"] < r["clean_acc"] for r in one.values())
