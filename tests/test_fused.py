"""Fused attention over channel-major maps equals the explicit softmax formula, values and gradients, and
reaches the fused CPU kernel (the transposed views it replaced fell back to the unfused math path)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.profiler import profile

from genzoo.nets.biggan import SelfAttention
from genzoo.nets.fused import attend_channels, attend_packed_tokens, upsample_nearest2x


def explicit(q, k, v, scale, mask=None):
    """softmax(scale·qᵀk + mask)·v in float64 over channel-major [N, heads, d, L]."""
    logits = scale * torch.einsum("nhdl,nhdm->nhlm", q.double(), k.double())
    if mask is not None:
        logits = logits + mask.double()
    return torch.einsum("nhlm,nhdm->nhdl", logits.softmax(-1), v.double())


@pytest.mark.parametrize("masked", [False, True])
def test_attend_channels_matches_the_formula_in_value_and_gradient(masked):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 8, 20, generator=gen, requires_grad=True) for _ in range(3))
    mask = torch.randn(2, 1, 1, 20, generator=gen) if masked else None
    scale = 1 / math.sqrt(8)
    got = attend_channels(q, k, v, scale=scale, attn_mask=mask)
    ref = explicit(q, k, v, scale, mask)
    assert got.shape == q.shape
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5)
    w = torch.randn(got.shape, generator=gen)
    g_got = torch.autograd.grad((got * w).sum(), (q, k, v))
    g_ref = torch.autograd.grad((ref * w.double()).sum(), (q, k, v))
    for a, b in zip(g_got, g_ref):
        assert (a.double() - b).norm() <= 1e-4 * b.norm()


def test_channel_major_views_reach_the_fused_cpu_kernel():
    q = torch.randn(2, 2, 16, 64, requires_grad=True)
    with profile() as prof:
        attend_channels(q, q, q).sum().backward()
    names = {e.key for e in prof.key_averages()}
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in names
    assert "aten::_scaled_dot_product_attention_math" not in names


def test_biggan_self_attention_is_the_sagan_formula():
    """o(g·softmax(θᵀφ)ᵀ) with 2×2 max-pooled φ and g, unscaled logits, added with γ (SAGAN Eq. 1-3)."""
    torch.manual_seed(0)
    block = SelfAttention(16).eval()
    with torch.no_grad():
        block.gamma.fill_(0.7)
    x = torch.randn(2, 16, 8, 8)
    theta = block.theta(x).flatten(2)
    phi = torch.nn.functional.max_pool2d(block.phi(x), 2).flatten(2)
    g = torch.nn.functional.max_pool2d(block.g(x), 2).flatten(2)
    attn = explicit(theta[:, None], phi[:, None], g[:, None], 1.0)[:, 0].float().reshape(2, 8, 8, 8)
    out, ref = block(x), x + 0.7 * block.o(attn)
    assert (out - ref).norm() <= 1e-5 * ref.norm()  # unscaled logits: compare in norm, not per element


@pytest.mark.parametrize("new_order", [True, False], ids=["(3,heads,d)", "(heads,3,d)"])
def test_packed_token_attention_matches_the_formula_and_runs_fused(new_order):
    """Token-major packed qkv [N, L, 3C] in either channel layout gives each head's softmax(qkᵀ/√d)·v."""
    gen = torch.Generator().manual_seed(1)
    n, length, heads, d = 2, 12, 3, 4
    qkv = torch.randn(n, length, 3 * heads * d, generator=gen, dtype=torch.float64)
    parts = qkv.view(n, length, 3, heads, d)
    if not new_order:
        parts = qkv.view(n, length, heads, 3, d).transpose(2, 3)
    q, k, v = (parts[:, :, i].permute(0, 2, 3, 1) for i in range(3))  # channel-major [N, heads, d, L]
    ref = explicit(q, k, v, 1 / math.sqrt(d)).permute(0, 3, 1, 2).reshape(n, length, heads * d)
    got = attend_packed_tokens(qkv.float(), heads, new_order, scale=1 / math.sqrt(d))
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5)
    with profile() as prof:
        attend_packed_tokens(qkv.float().requires_grad_(), heads, new_order).sum().backward()
    names = {e.key for e in prof.key_averages()}
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in names
    assert "aten::_scaled_dot_product_attention_math" not in names


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["contiguous", "cl"])
def test_upsample_nearest2x_equals_interpolate_with_its_gradient(fmt):
    x = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(2)).contiguous(memory_format=fmt)
    x.requires_grad_()
    got, ref = upsample_nearest2x(x), torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
    assert torch.equal(got, ref) and got.is_contiguous(memory_format=fmt)
    w = torch.randn(ref.shape, generator=torch.Generator().manual_seed(3))
    grad = torch.autograd.grad((got * w).sum(), x)[0]
    block_sums = w.double().view(2, 3, 4, 2, 5, 2).sum((3, 5))  # each input pixel feeds a 2×2 block
    torch.testing.assert_close(grad.double(), block_sums, rtol=4 * torch.finfo(torch.float32).eps, atol=1e-6)
