"""Fused attention over channel-major maps equals the explicit softmax formula, values and gradients, and
reaches the fused CPU kernel (the transposed views it replaced fell back to the unfused math path)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.profiler import profile

import genzoo.nets.fused as fusedmod
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


def test_bf16_attention_that_autograd_records_on_cpu_is_the_explicit_product():
    """bfloat16 CPU attention under autograd: two matrix multiplies (the fused CPU backward is slow there),
    equal to the formula to bfloat16 accuracy, masks included; float32 keeps the fused kernel (above)."""
    gen = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(2, 3, 8, 20, generator=gen, dtype=torch.float64) for _ in range(3))
    mask = torch.randn(2, 1, 1, 20, generator=gen)
    keep = torch.rand(2, 1, 20, 20, generator=gen) > 0.3
    keep[..., 0] = True  # every query keeps a key
    bf = [t.bfloat16().requires_grad_() for t in (q, k, v)]
    for attn_mask, ref_mask in ((None, None), (mask, mask), (keep, torch.where(keep, 0.0, float("-inf")))):
        with profile() as prof:
            got = attend_channels(*bf, scale=0.4, attn_mask=attn_mask)
            got.float().sum().backward()
        names = {e.key for e in prof.key_averages()}
        assert not any("flash" in n for n in names) and "aten::bmm" in names
        ref = explicit(*(t.bfloat16().double() for t in (q, k, v)), 0.4, ref_mask)
        tol = 8 * 2.0**-8  # a few bfloat16 roundings of O(1) values
        assert (got.double() - ref).abs().max() <= tol * ref.abs().max()
    with torch.no_grad():  # sampling keeps the fused kernel
        with profile() as prof:
            attend_channels(*bf, scale=0.4)
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in {e.key for e in prof.key_averages()}


def reference_norm_silu(x, norm, scale=None, shift=None, silu=True):
    """SiLU(GroupNorm(x)·(1 + scale) + shift) in float64 from the definition (Wu & He 2018, Eq. 1-2)."""
    n, c = x.shape[:2]
    g = x.double().reshape(n, norm.num_groups, -1)
    xhat = ((g - g.mean(-1, keepdim=True)) / (g.var(-1, unbiased=False, keepdim=True) + norm.eps).sqrt())
    h = xhat.reshape(x.shape) * norm.weight.double()[:, None, None] + norm.bias.double()[:, None, None]
    if scale is not None:
        h = h * (1 + scale.double()) + shift.double()
    return torch.nn.functional.silu(h) if silu else h


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("adaptive", [None, False, True], ids=["norm only", "plain", "scale-shift"])
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["contiguous", "cl"])
def test_norm_silu_equals_the_definition_in_value_and_gradient(dtype, adaptive, fmt, without_native_kernels):
    """Both PyTorch paths of ``norm_silu`` and ``group_norm``, taken where the compiled kernel is not built
    (the library GroupNorm on contiguous maps, the explicit-backward one on channels_last CPU maps), give
    the definition's output and the gradients of x, weight, bias, scale and shift: to 1e-4 relative in
    float32, to a few bfloat16 roundings in bfloat16. Offset inputs (mean 3, std 2) check that the group
    variance does not cancel."""
    gen = torch.Generator().manual_seed(5)
    n, c, h, w = 3, 16, 5, 6
    norm = torch.nn.GroupNorm(4, c)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(c, generator=gen))
        norm.bias.copy_(torch.randn(c, generator=gen))
    x = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64) * 2 + 3
    x = x.to(dtype).contiguous(memory_format=fmt).requires_grad_()
    ss = [torch.randn(n, c, 1, 1, generator=gen).to(dtype).requires_grad_() for _ in range(2)]
    ss = ss if adaptive else []
    assert fusedmod.group_norm_silu_pays(norm, x) == (fmt == torch.channels_last)
    silu = adaptive is not None
    got = (fusedmod.norm_silu(norm, x, tuple(ss) if adaptive else None)
           if silu else fusedmod.group_norm(norm, x))
    assert got.dtype == dtype and got.is_contiguous(memory_format=fmt)
    tol = 1e-4 if dtype == torch.float32 else 16 * 2.0**-8
    assert_norm_silu_matches_reference(got, x, norm, ss, silu, tol, gen)


def assert_norm_silu_matches_reference(got, x, norm, ss, silu, tol, gen):
    """``got`` (computed from x, norm and the scale/shift list ``ss``) and its gradients for x, the norm's
    weight and bias and ``ss``, against a random cotangent, equal the float64 reference within ``tol``
    relative (values: of the largest output; gradients: in norm)."""
    ref = reference_norm_silu(x.detach(), norm, *(s.detach() for s in ss), silu=silu)
    weight = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    inputs = (x, norm.weight, norm.bias, *ss)
    grads = torch.autograd.grad((got.double() * weight).sum(), inputs)
    ref_inputs = [t.detach().double().requires_grad_() for t in inputs]
    ref_again = reference_norm_silu(ref_inputs[0], _Norm(norm, *ref_inputs[1:3]), *ref_inputs[3:], silu=silu)
    ref_grads = torch.autograd.grad((ref_again * weight).sum(), ref_inputs)
    assert (got.double() - ref).abs().max() <= tol * ref.abs().max()
    for a, b in zip(grads, ref_grads):
        assert (a.double() - b).norm() <= tol * b.norm()
    return grads


class _Norm:
    """A GroupNorm's settings with float64 weight and bias (for the reference's gradients)."""

    def __init__(self, norm, weight, bias):
        self.num_groups, self.eps, self.weight, self.bias = norm.num_groups, norm.eps, weight, bias


def test_norm_silu_under_autograd_copies_nothing(without_native_kernels):
    """SiLU's backward reads its input: an in-place SiLU that autograd records would first clone it."""
    norm = torch.nn.GroupNorm(4, 16)
    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    with profile() as prof:
        fusedmod.norm_silu(norm, x).sum().backward()
    assert "aten::clone" not in {e.key for e in prof.key_averages()}


@pytest.mark.parametrize("adaptive", [None, False, True], ids=["norm only", "plain", "scale-shift"])
def test_float32_channels_last_sampling_takes_the_library_kernel_in_place(adaptive, without_native_kernels):
    """Without the compiled kernel, where autograd records nothing, a float32 channels_last map goes through
    the library GroupNorm with the scale-shift and SiLU in place (faster there, docs/performance.md): same
    definition to 1e-4 relative, channels_last kept, the input untouched; bfloat16 keeps the explicit
    path."""
    gen = torch.Generator().manual_seed(7)
    n, c = 3, 16
    norm = torch.nn.GroupNorm(4, c)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(c, generator=gen))
        norm.bias.copy_(torch.randn(c, generator=gen))
    x = (torch.randn(n, c, 5, 6, generator=gen, dtype=torch.float64) * 2 + 3).float()
    x = x.contiguous(memory_format=torch.channels_last)
    ss = [torch.randn(n, c, 1, 1, generator=gen) for _ in range(2)] if adaptive else []
    before = x.clone()
    with torch.inference_mode():
        assert not fusedmod.group_norm_silu_pays(norm, x)
        assert fusedmod.group_norm_silu_pays(norm, x.bfloat16())
        with profile() as prof:
            got = (fusedmod.norm_silu(norm, x, tuple(ss) if adaptive else None) if adaptive is not None
                   else fusedmod.group_norm(norm, x))
    keys = {e.key for e in prof.key_averages()}
    assert "aten::native_group_norm" in keys and "_GroupNormSiLU" not in keys
    ref = reference_norm_silu(x, norm, *ss, silu=adaptive is not None)
    assert got.is_contiguous(memory_format=torch.channels_last) and torch.equal(x, before)
    assert (got.double() - ref).abs().max() <= 1e-4 * ref.abs().max()
