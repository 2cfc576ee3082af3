"""RMC's bfloat16 adaptation on real CIFAR-10 (Wu, Yuan, Wu, ICML 2020, Algorithm 1): the pretrained
ResNet-32, a stream of real test images, predictions equal to float32's; and the record names the
precision the stream ran in."""

from __future__ import annotations

import tomllib

import pytest
import torch

from bench.run.runner import Runner, RunOptions, resolve_params
from bench.spec import grid
from bench.track.results import load_records
from defenses.rmc import RMC

N = 20


def _rmc(model, train_set, cache_dir, **over) -> RMC:
    # K = 32 and 4 epochs at lr 2.5e-4 (10x the paper's CIFAR-10 rate), so that adaptation moves
    # predictions within 4 Adam steps a point; D' = D plus a 2-step PGD copy, for CI time.
    given = {"k": 32, "max_epochs": 4, "lr": 2.5e-4, "copies": 1,
             "db_params": {"eps": 8 / 255, "steps": 2, "step_size": 4 / 255}, **over}
    return RMC(**resolve_params(RMC, "cifar10", given, seed=0, cache_dir=str(cache_dir))).prepare(model, train_set)


@pytest.mark.slow
def test_bfloat16_stream_predicts_as_float32_on_cifar10(cifar_resnet32, cifar_test, tmp_path):
    """Measured on a 2-core AMD EPYC (AVX512-BF16), one thread: 19 of 20 predictions equal (the issue's
    95% bar), adaptation moves 5 of 20 away from the unadapted model in both precisions, float32 21.9 s
    and bfloat16 15.5 s of CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        d = cifar_test.subset(200, 500)  # D: test images 500-699, disjoint from the stream
        x = cifar_test.x[:N]
        with torch.no_grad():
            base = cifar_resnet32(x).argmax(1)
        fp32 = _rmc(cifar_resnet32, d, tmp_path).predict(x).argmax(1)
        bf16_rmc = _rmc(cifar_resnet32, d, tmp_path, precision="bfloat16")
        bf16 = bf16_rmc.predict(x).argmax(1)
    finally:
        torch.set_num_threads(threads)
    assert (fp32 != base).sum() >= 2 and (bf16 != base).sum() >= 2  # the adaptation matters here
    assert (fp32 == bf16).float().mean().item() >= 0.95 - 1e-6, (fp32 == bf16).tolist()
    assert bf16_rmc.precision == "bfloat16"


GRID = """
name = "rmc-precision"
dataset = "digits"
arch = "small-cnn"
limit = 4
train_limit = 120
seed = 0
[train.standard]
epochs = 1
[runtime.rmc]
k = 16
max_epochs = 1
precision = "{precision}"
[[attacks]]
name = "fgsm"
eps = 0.1
"""


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_the_record_names_the_adaptation_precision(tmp_path, precision):
    spec = grid.parse(tomllib.loads(GRID.format(precision=precision)), "rmc-precision")
    opts = RunOptions(cache_dir=tmp_path / "cache", results_dir=tmp_path / "results", tracking=False,
                      progress=False, log_samples=False)
    assert Runner(spec, opts).run().failed == 0
    rmc = [r for r in load_records(tmp_path / "results" / "rmc-precision.jsonl") if r["runtime_defense"] == "rmc"]
    assert rmc and all(r["adapt_precision"] == precision for r in rmc)
