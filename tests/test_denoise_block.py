"""The fused denoising block computes exactly the non-local mean of Xie et al. (CVPR 2019)."""

from __future__ import annotations

import torch

from defenses.denoise_block import DenoiseBlock


def explicit_block(blk: DenoiseBlock, x: torch.Tensor) -> torch.Tensor:
    """y = x + BN(conv1x1(NL(x))), NL(x)_p = sum_q softmax_q(<theta_p, phi_q> / sqrt(C/2)) x_q, written out."""
    b, c, h, w = x.shape
    theta, phi = blk.theta(x).flatten(2), blk.phi(x).flatten(2)
    attn = (theta.transpose(1, 2) @ phi * blk.scale).softmax(-1)
    nl = (x.flatten(2) @ attn.transpose(1, 2)).view(b, c, h, w)
    return x + blk.bn(blk.out(nl))


def test_denoise_block_matches_the_explicit_non_local_mean():
    torch.manual_seed(0)
    blk = DenoiseBlock(16).eval()
    torch.nn.init.normal_(blk.bn.weight)  # zero-initialised gamma would hide the non-local term
    x = torch.randn(3, 16, 12, 12, requires_grad=True)
    fused, explicit = blk(x), explicit_block(blk, x)
    assert (fused - x).abs().max() > 0.1  # the block really changes x
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)
    (g_fused,) = torch.autograd.grad(fused.square().sum(), x)
    (g_explicit,) = torch.autograd.grad(explicit.square().sum(), x)
    torch.testing.assert_close(g_fused, g_explicit, atol=1e-4, rtol=1e-4)
