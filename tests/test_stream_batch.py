"""Batched RMC streams in the runner (bench.run.stream_batch): cells on one prepared RMC under different
attacks run their streams together, and every record equals the one-stream-at-a-time record."""

from __future__ import annotations

import json

import pytest
import torch

from bench.run.stream_batch import StreamBatcher, batch_key, parse_stream_batch, resolve_stream_batch
from bench.spec import grid
from tests.test_cli import bench

GRID = """name = "sb"
dataset = "digits"
arch = "tiny-cnn"
limit = 10
seed = 0
[train.standard]
epochs = 4
[runtime.none]
[runtime.rmc]
max_epochs = 3
[[attacks]]
name = "fgsm"
eps = 0.1
[[attacks]]
name = "pgd"
eps = 0.1
params = { steps = 5 }
[[attacks]]
name = "bim"
eps = 0.1
params = { steps = 5 }
[[attacks]]
name = "pgd"
label = "pgd-adaptive"
eps = 0.1
params = { steps = 5 }
threat = "adaptive"
"""


def _records(path):
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    out = {r["cell_id"]: r for r in lines}
    assert len(out) == len(lines)  # one record per cell: none computed twice
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The grid with streams one at a time, in batches of 3, and in batches of 3 on two processes
    (a batch claims its later cells, so the other process never computes them too), each from
    empty caches."""
    tmp = tmp_path_factory.mktemp("sb")
    (tmp / "g.toml").write_text(GRID)
    out = {}
    for b, jobs in (("1", "1"), ("3", "1"), ("3", "2")):
        folder = tmp / f"b{b}-j{jobs}"
        proc = bench("run", "--grid", str(tmp / "g.toml"), "--results-dir", str(folder / "results"),
                     "--cache-dir", str(folder / "cache"), "--no-tracking", "--no-leaderboard",
                     "--stream-batch", b, "--jobs", jobs, cwd=tmp)
        assert proc.returncode == 0, proc.stderr + proc.stdout
        out[b, jobs] = _records(folder / "results" / "sb.jsonl")
    return out


@pytest.mark.slow
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_batched_streams_record_what_sequential_streams_record(runs, jobs):
    one, three = runs["1", "1"], runs["3", jobs]
    assert one.keys() == three.keys() and len(one) == 8
    batched = {cid for cid, r in three.items() if "stream_batch" in r}
    # the three base attacks on RMC share one batch; the adaptive attack and runtime none do not. On
    # two processes, which cells the second one claims before the first reserves them is a race.
    rmc_base = {("rmc", "fgsm"), ("rmc", "pgd"), ("rmc", "bim")}
    pairs = {(three[c]["runtime_defense"], three[c]["attack"]) for c in batched}
    assert pairs == rmc_base if jobs == "1" else pairs <= rmc_base, (jobs, pairs)
    assert all(three[c]["stream_batch"] == (3 if jobs == "1" else len(batched)) for c in batched)
    assert not any("stream_batch" in r for r in one.values())
    for cid, rec in one.items():
        other = three[cid]
        assert other["status"] == rec["status"] == "ok", (other.get("error"), rec.get("error"))
        for field in ("clean_per_example", "per_example", "robust_acc", "max_perturbation"):
            assert other[field] == rec[field], (rec["key"], field)
        if "per_point" in rec:  # the stream: order, correctness and adaptation epochs per point
            assert other["per_point"] == rec["per_point"], rec["key"]
            assert len(other["per_point_delay_s"]) == rec["n"]
        assert other["seconds"] > 0
    assert any(r["robust_acc"] < r["clean_acc"] for c, r in three.items() if c in batched)  # attacks bite


def test_batch_partners_share_model_defense_points_and_a_static_threat(tmp_path):
    (tmp_path / "g.toml").write_text(GRID)
    cells = grid.load(str(tmp_path / "g.toml")).cells()
    rmc = [c for c in cells if c.runtime_defense == "rmc"]
    batcher = StreamBatcher(3)
    batcher.upcoming = cells
    first = next(c for c in rmc if c.threat == "base")
    partners = batcher.partners(first)
    assert len(partners) == 2 and all(p.runtime_defense == "rmc" and p.threat == "base" for p in partners)
    assert batch_key(next(c for c in rmc if c.threat == "adaptive")) is None
    batcher.begin(partners[0])  # a cell that has started is nobody's partner
    assert partners[0] not in batcher.partners(first)
    assert StreamBatcher(1).partners(first) == []


def test_stream_batch_option_and_its_default_per_device(monkeypatch):
    monkeypatch.delenv("BENCH_STREAM_BATCH", raising=False)
    assert resolve_stream_batch(None, torch.device("cpu")) == 1
    assert resolve_stream_batch(None, torch.device("cuda")) == 16
    assert resolve_stream_batch(parse_stream_batch("4"), torch.device("cpu")) == 4
    monkeypatch.setenv("BENCH_STREAM_BATCH", "2")
    assert resolve_stream_batch(None, torch.device("cpu")) == 2
    assert parse_stream_batch("auto") is None


@pytest.mark.parametrize("value", ["0", "many", "-2"])
def test_bad_stream_batch_is_one_line(tmp_path, value):
    proc = bench("run", "--stream-batch", value, "--dry-run", cwd=tmp_path)
    assert proc.returncode == 2
    assert "--stream-batch must be a positive integer or 'auto'" in proc.stderr and "Traceback" not in proc.stderr
