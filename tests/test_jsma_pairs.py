"""JSMA's pruned pair search picks exactly the pair the full nf x nf saliency map would."""

from __future__ import annotations

import pytest
import torch

from attacks.jsma import best_pairs


def brute_force(a: torch.Tensor, b: torch.Tensor, domain: torch.Tensor) -> tuple[list, torch.Tensor, torch.Tensor]:
    """The whole saliency map, as the paper defines it (and as this module used to compute it)."""
    nf = a.shape[1]
    a, b = a.masked_fill(~domain, 0.0), b.masked_fill(~domain, 0.0)
    pa, pb = a[:, :, None] + a[:, None, :], b[:, :, None] + b[:, None, :]
    valid = (pa > 0) & (pb < 0) & domain[:, :, None] & domain[:, None, :] & ~torch.eye(nf, dtype=torch.bool)
    score = torch.where(valid, pa * pb.abs(), torch.zeros(())).flatten(1)
    flat = score.argmax(1)
    pairs = [{int(f // nf), int(f % nf)} for f in flat]
    return pairs, valid.flatten(1).any(1), score.max(1).values


@pytest.mark.parametrize("nf,kind", [(64, "independent"), (64, "correlated"), (784, "sparse"), (3072, "correlated")])
def test_best_pairs_matches_the_full_saliency_map(nf, kind):
    gen = torch.Generator().manual_seed(nf)
    n = 6 if nf < 3072 else 2
    a, b = torch.randn(n, nf, generator=gen), torch.randn(n, nf, generator=gen)
    if kind == "correlated":  # like real logit gradients: the other logits' sum opposes the target's
        b = -a + 0.3 * b
    elif kind == "sparse":
        a = a * (torch.rand(n, nf, generator=gen) > 0.9)
    domain = torch.rand(n, nf, generator=gen) > 0.2
    domain[0] = False  # no feature left
    domain[1] = False
    domain[1, :1] = True  # one feature: no pair
    if kind == "independent":
        b[2] = b[2].abs()  # no b_p + b_q < 0: no valid pair
    pairs, has, _ = brute_force(a, b, domain)
    p, q, has2 = best_pairs(a, b, domain)
    assert has2.tolist() == has.tolist()
    assert not has[0] and not has[1]
    for i in range(n):
        if has[i]:
            assert {int(p[i]), int(q[i])} == pairs[i] and int(p[i]) != int(q[i])
            assert domain[i, p[i]] and domain[i, q[i]]


def test_compact_jsma_returns_what_the_whole_batch_loop_returns(digits_model, digits_test):
    """Dropping the rows that reached their target from the batch changes no row's result: same images
    as running every row every iteration, and the attack still reaches its targets."""
    import attacks

    x, y = digits_test.x[:24], digits_test.y[:24]
    out = {c: attacks.create("jsma", gamma=0.3, targeted=True, seed=3, compact=c,
                                    batch_size=24)(digits_model, x, y)
           for c in (True, False)}
    assert torch.equal(out[True], out[False])
    with torch.no_grad():
        acc = (digits_model(out[True]).argmax(1) == y).float().mean().item()
    assert acc < 0.5
    changed = (out[True] != x).flatten(1).sum(1)
    assert changed.min() < changed.max()  # rows finished at different iterations: compaction had work to do
