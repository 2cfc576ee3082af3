"""B RMC streams batched with torch.func (defenses/rmc_batched.py) against B sequential RMC streams
(Wu, Yuan, Wu, ICML 2020, Algorithm 1): bit for bit in float64, for an MLP and a small CNN on real
digits, and the batched step on a CIFAR ResNet-20; without the exact rules vmap's own decompositions
differ by rounding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.core.data import Dataset
from bench.core.errors import BenchError
from bench.core.models import Classifier, SmallCNN
from bench.run.artifacts import resolve_params
from defenses.rmc import RMC, RMCNonMasking, RMCPlus
from defenses.rmc_batched import BatchedRMC, can_batch, exact_copy

B, POINTS = 3, 3


class TinyMLP(Classifier):
    """64 -> 32 -> 10 on 8x8 digits; ``features`` is the hidden layer RMC searches. Inputs are cast to
    float64 (D' is stored as float32 images)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU())
        self.out = nn.Linear(32, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.double())

    def head(self, f: torch.Tensor) -> torch.Tensor:
        return self.out(f)


class SmallCNN64(SmallCNN):
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return super().features(x.double())


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sets64(digits_train, digits_test) -> tuple[Dataset, Dataset]:
    """Real digits in float64: the first 400 training images as D (small, so the test stays fast)."""
    train = Dataset("digits", "train", digits_train.x[:400].double(), digits_train.y[:400], 10)
    test = Dataset("digits", "test", digits_test.x[:20].double(), digits_test.y[:20], 10)
    return train, test


def _train(model: nn.Module, train: Dataset, epochs: int) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for idx in torch.randperm(len(train.y), generator=g).split(64):
            loss = nn.functional.cross_entropy(model(train.x[idx]), train.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


@pytest.fixture(scope="module")
def mlp64(sets64) -> nn.Module:
    torch.manual_seed(0)
    return _train(TinyMLP().double(), sets64[0], epochs=15)


@pytest.fixture(scope="module")
def cnn64(sets64) -> nn.Module:
    torch.manual_seed(0)
    return _train(SmallCNN64(10, 1, width=8).double(), sets64[0], epochs=3)


def _rmc(cls, model, train, cache_dir, **over):
    # digits defaults (K 128, patience 2, 8 epochs) at a larger lr, so that the weights move visibly
    params = resolve_params(cls, "digits", {"lr": 2.5e-3, "k": 64, "batch_size": 24, "max_epochs": 5, **over},
                            seed=0, cache_dir=str(cache_dir))
    return cls(**params).prepare(model, train)


def _streams(test: Dataset) -> torch.Tensor:
    """B different streams of POINTS real test images each (as different attacks' x_adv would be)."""
    return torch.stack([test.x[b * POINTS : (b + 1) * POINTS] for b in range(B)])


def _sequential(cls, model, train, cache_dir, xs, seeds, **over):
    outs, weights, adam, stats = [], [], [], []
    for b in range(B):
        d = _rmc(cls, model, train, cache_dir, **over)
        d.generator.manual_seed(seeds[b])
        outs.append(d.predict(xs[b]))
        weights.append({n: p.detach().clone() for n, p in d.adapted.named_parameters()})
        adam.append([d.optimizer.state[p] for p in d.adapted.parameters()])
        stats.append(d.last_stats)
    return torch.stack(outs), weights, adam, stats


@pytest.mark.parametrize("arch,cls,over", [
    ("mlp", RMC, {}), ("mlp", RMC, {"patience": 1, "max_epochs": 6}), ("mlp", RMCNonMasking, {}),
    pytest.param("cnn", RMC, {}, marks=pytest.mark.slow)])
def test_batched_streams_equal_sequential_bit_for_bit(arch, cls, over, request, sets64, nn_cache):
    model = request.getfixturevalue(f"{arch}64")
    train, test = sets64
    xs, seeds = _streams(test), [0, 0, 7]  # two streams share a seed, one samples differently
    out_s, w_s, adam_s, stats_s = _sequential(cls, model, train, nn_cache, xs, seeds, **over)
    batched = BatchedRMC(_rmc(cls, model, train, nn_cache, **over), B, seeds=seeds)
    out_b = batched.predict(xs)
    assert out_b.dtype == torch.float64 and torch.equal(out_b, out_s)
    assert batched.last_stats == stats_s
    for b in range(B):
        wb = batched.weights(b)
        assert all(torch.equal(wb[n], w_s[b][n]) for n in wb)
        for mine, ref in zip(batched.adam_state(b), adam_s[b]):
            assert mine["step"] == float(ref["step"])
            assert torch.equal(mine["exp_avg"], ref["exp_avg"]) and torch.equal(mine["exp_avg_sq"], ref["exp_avg_sq"])
    # not vacuous: the weights moved, the streams differ, and fits stopped at different epochs
    assert any(not torch.equal(w_s[0][n], p) for n, p in model.named_parameters())
    assert any(not torch.equal(w_s[0][n], w_s[2][n]) for n in w_s[0])
    epochs = {s["adapt_epochs"] for st in stats_s for s in st} | {s["calib_epochs"] for st in stats_s for s in st}
    assert len(epochs) > 1, epochs


def test_without_the_exact_rules_vmap_differs_by_rounding_only(mlp64, sets64, nn_cache):
    """vmap's own linear (matmul, then + bias) rounds differently from addmm (bias inside the GEMM):
    the reason for the exact rules. The decisions (epochs, stop reasons) agree on this data."""
    train, test = sets64
    xs = _streams(test)
    out_s, _, _, stats_s = _sequential(RMC, mlp64, train, nn_cache, xs, [0] * B)
    loose = BatchedRMC(_rmc(RMC, mlp64, train, nn_cache), B, exact=False)
    out_b = loose.predict(xs)
    assert not torch.equal(out_b, out_s)
    assert (out_b - out_s).abs().max() < 1e-9
    assert loose.last_stats == stats_s


def test_rmc_plus_and_bad_input_are_refused(mlp64, sets64, nn_cache):
    train, _ = sets64
    with pytest.raises(BenchError, match="rewrites D'"):
        BatchedRMC(_rmc(RMCPlus, mlp64, train, nn_cache), B)
    rmc = _rmc(RMC, mlp64, train, nn_cache)
    # the batched steps run in float32 only: a bfloat16 RMC keeps its streams one at a time
    assert can_batch(rmc) and not can_batch(_rmc(RMC, mlp64, train, nn_cache, precision="bfloat16"))
    with pytest.raises(BenchError, match="one seed per stream"):
        BatchedRMC(rmc, B, seeds=[0])
    with pytest.raises(BenchError, match="streams"):
        BatchedRMC(rmc, 2).predict(torch.zeros(3, 1, 1, 8, 8, dtype=torch.float64))


@pytest.mark.slow
def test_resnet_gradients_and_logits_equal_per_stream_bit_for_bit(shared_data, shared_weights):
    """The step RMC repeats, on the CIFAR ResNet-20 (pretrained) and real, channels-last CIFAR-10 images:
    vmapped logits and per-stream gradients equal the unbatched module's, float64, bit for bit (BatchNorm
    in eval mode, option-A shortcuts, batched weights)."""
    from torch.func import functional_call, grad, vmap

    from bench.core import data, models

    cifar = data.load("cifar10", "test", shared_data, limit=16)
    model = models.load("resnet20", shared_weights / "cifar10-resnet" / "resnet20-12fca82f.th").double().eval()
    net = exact_copy(model)  # BatchedRMC's private copy, without building a D'
    assert cifar.x.is_contiguous(memory_format=torch.channels_last)  # the layout that needs care
    x, y = cifar.x.double().view(2, 8, 3, 32, 32), cifar.y.view(2, 8)
    params = {n: torch.stack([p.detach(), p.detach() * 1.01]) for n, p in model.named_parameters()}
    bufs = dict(model.named_buffers())

    def logits(p, xb):
        return functional_call(net, (p, bufs), (xb,))

    def loss(p, xb, yb):
        return nn.functional.cross_entropy(logits(p, xb), yb)

    grads, out = vmap(grad(loss))(params, x, y), vmap(logits)(params, x)
    for b in range(2):
        ref = functional_call(model, ({n: t[b] for n, t in params.items()}, bufs), (x[b],))
        assert torch.equal(out[b], ref)
        own = {n: t[b].clone().requires_grad_() for n, t in params.items()}
        nn.functional.cross_entropy(functional_call(model, (own, bufs), (x[b],)), y[b]).backward()
        differ = {n: float((grads[n][b] - own[n].grad).abs().max()) for n in own
                  if not torch.equal(grads[n][b], own[n].grad)}
        assert not differ, differ
