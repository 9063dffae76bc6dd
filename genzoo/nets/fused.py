"""Fewer, fused kernels for the layers every network shares: attention and GroupNorm + SiLU.

On the CPU, GroupNorm (+ scale-shift) + SiLU runs through a hand-written kernel compiled at first use
(``cpu_kernels``: two passes over the map forward, two backward, float32 and bfloat16, contiguous and
channels_last); where it cannot be built, through the PyTorch paths below (same results, slower).

``scaled_dot_product_attention`` dispatches to its fused kernels (flash attention on CPU and CUDA,
memory-efficient attention on CUDA) only when the last dimension of q, k and v is contiguous; the
transposed views that convolution layouts produce ([N, heads, d, L] seen as [N, heads, L, d]) silently
fall back to the unfused math path (explicit matmul, softmax and masking kernels). These helpers lay the
tokens out once so the fused kernels run.

On the CPU the backward of the fused (flash) kernel in bfloat16 is 2-6x slower than the explicit product,
whose two matrix multiplies run on the CPU's bfloat16 matrix units (AMX) through oneDNN
(docs/performance.md): there, an attention that autograd records is computed as matmul, softmax, matmul.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from genzoo.nets import cpu_kernels


def explicit_attention_pays(q: torch.Tensor) -> bool:
    """True where softmax(scale·qkᵀ)·v as two matrix multiplies trains faster than the fused kernel: a
    bfloat16/float16 CPU tensor in a graph that autograd records (the fused CPU backward is slow there)."""
    return (q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16)
            and torch.is_grad_enabled() and q.requires_grad)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None,
              scale: float | None = None) -> torch.Tensor:
    """softmax(scale·qkᵀ [+ mask])·v (Vaswani et al. 2017, Eq. 1) over token-major [..., L, d]: the fused
    ``scaled_dot_product_attention``, or the explicit product where that trains faster
    (``explicit_attention_pays``). A boolean mask keeps the positions where it is True."""
    if not explicit_attention_pays(q):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    logits = torch.matmul(q * scale, k.transpose(-1, -2))
    if attn_mask is not None:
        logits = (logits.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool
                  else logits + attn_mask.to(logits.dtype))
    return torch.matmul(logits.softmax(-1), v)


def token_major(t: torch.Tensor) -> torch.Tensor:
    """[..., d, L] channel-major -> contiguous [..., L, d], the layout the fused kernels take."""
    return t.transpose(-1, -2).contiguous()


def attend_channels(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs) -> torch.Tensor:
    """softmax(scale·qᵀk [+ mask])·v (Vaswani et al. 2017, Eq. 1) over channel-major [N, heads, d, L]
    inputs, returned channel-major [N, heads, d, L]; ``kwargs`` (``attn_mask``, ``scale``) go to
    ``attention``."""
    out = attention(token_major(q), token_major(k), token_major(v), **kwargs)
    return out.transpose(-1, -2)


def attend_packed_tokens(qkv: torch.Tensor, num_heads: int, new_order: bool, **kwargs) -> torch.Tensor:
    """Multi-head softmax(scale·qkᵀ)·v (Vaswani et al. 2017, Eq. 1) over token-major packed
    [N, L, 3·C] -> [N, L, C].

    The channel layout of ``qkv`` is (3, heads, d) when ``new_order``, else (heads, 3, d) (ADM's legacy
    order). q, k and v are strided views with contiguous head dimensions, which the fused kernels take
    without a copy; their output is token-major in memory, so the final reshape is a view too.
    """
    n, length, width = qkv.shape
    d = width // (3 * num_heads)
    if new_order:
        q, k, v = qkv.view(n, length, 3, num_heads, d).permute(2, 0, 3, 1, 4).unbind(0)
    else:
        q, k, v = qkv.view(n, length, num_heads, 3, d).permute(3, 0, 2, 1, 4).unbind(0)
    out = attention(q, k, v, **kwargs)  # [N, heads, L, d]
    return out.transpose(1, 2).reshape(n, length, num_heads * d)


def upsample_nearest2x(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour ×2 upsampling of [N, C, H, W], equal to ``F.interpolate(x, scale_factor=2)``.

    For contiguous maps one broadcast copy is about twice as fast as ``interpolate`` on CPU; channels_last
    maps keep ``interpolate``, which preserves their layout.
    """
    if x.is_contiguous():
        n, c, h, w = x.shape
        return x[:, :, :, None, :, None].expand(n, c, h, 2, w, 2).reshape(n, c, 2 * h, 2 * w)
    return F.interpolate(x, scale_factor=2, mode="nearest")


def _channel_rows(x: torch.Tensor) -> torch.Tensor:
    """A channels_last [N, C, H, W] map as [N, H·W, C] (a view; other layouts are copied)."""
    n, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(n, h * w, c)


def _group_moments(rows: torch.Tensor, groups: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and 1/sqrt(var + eps) of each channel's group (Wu & He 2018, Eq. 1-2), float32 [N, C], from
    per-channel sums over [N, L, C] rows: the group variance combines the channels' centred second moments
    and the spread of their means (Chan et al.'s pairwise formula), so nothing cancels."""
    n, length, c = rows.shape
    wide = rows.float()  # one conversion pass: bfloat16 reductions into float32 convert as they read
    mean_c = wide.sum(1) / length
    centred = wide - mean_c[:, None] if wide is rows else wide.sub_(mean_c[:, None])
    m2_c = centred.square_().sum(1) / length
    means = mean_c.view(n, groups, -1)
    mean_g = means.mean(-1, keepdim=True)
    var_g = m2_c.view(n, groups, -1).mean(-1, keepdim=True) + (means - mean_g).square().mean(-1, keepdim=True)
    per_channel = (n, groups, c // groups)
    return (mean_g.expand(per_channel).reshape(n, c),
            (var_g + eps).rsqrt().expand(per_channel).reshape(n, c))


class _GroupNormSiLU(torch.autograd.Function):
    """SiLU(GroupNorm(x)·(1 + scale) + shift) (or without the SiLU when ``silu`` is False) over a
    channels_last map with an explicit backward: per (sample, channel) y = a·x + b, so forward and backward
    are a few vectorised passes over the rows ([N, H·W, C]) where the CPU's channels_last GroupNorm kernels
    are 3-4x slower than on contiguous maps (docs/performance.md)."""

    @staticmethod
    def forward(ctx, x, groups, weight, bias, eps, scale, shift, silu):  # noqa: ANN001, ANN205
        n, c, h, w = x.shape
        rows = _channel_rows(x)
        mean, rstd = _group_moments(rows, groups, eps)
        gain = weight.float()[None].expand(n, c) if weight is not None else rstd.new_ones(n, c)
        offset = bias.float()[None].expand(n, c) if bias is not None else rstd.new_zeros(n, c)
        if scale is not None:
            factor = scale.float().reshape(n, c) + 1
            gain, offset = gain * factor, offset * factor + shift.float().reshape(n, c)
        a = gain * rstd
        b = offset - mean * a
        y = torch.addcmul(b[:, None].to(x.dtype), rows, a[:, None].to(x.dtype))
        ctx.save_for_backward(x, y if silu else None, a, mean, rstd, gain, weight, bias, scale)
        ctx.groups, ctx.silu = groups, silu
        return (F.silu(y) if silu else y).view(n, h, w, c).permute(0, 3, 1, 2)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        x, y, a, mean, rstd, gain, weight, bias, scale = ctx.saved_tensors
        n, c, h, w = x.shape
        groups = ctx.groups
        rows = _channel_rows(x)
        a_rows = a[:, None].to(x.dtype)
        if ctx.silu:
            dy = torch.ops.aten.silu_backward(_channel_rows(grad), y)  # y: the normalised rows, saved
            dyx = dy * rows
        else:
            dy = _channel_rows(grad)
            dyx = dy * rows
        s1 = dy.sum(1, dtype=torch.float32)  # Σ dy per (sample, channel)
        s2 = dyx.sum(1, dtype=torch.float32)  # Σ dy·x
        p = rstd * (s2 - mean * s1)  # Σ dy·x̂
        count = h * w * (c // groups)
        m1 = (gain * s1).view(n, groups, -1).sum(-1, keepdim=True) / count  # mean of dL/dx̂ in the group
        m2 = (gain * p).view(n, groups, -1).sum(-1, keepdim=True) / count  # mean of dL/dx̂ · x̂
        r = rstd.view(n, groups, -1)[..., :1]
        mu = mean.view(n, groups, -1)[..., :1]
        # dx = rstd·(gain·dy − m1 − x̂·m2) = a·dy + coef·x + const (the GroupNorm backward, per group)
        coef = (-r * r * m2).expand(n, groups, c // groups).reshape(n, 1, c)
        const = (r * (mu * r * m2 - m1)).expand(n, groups, c // groups).reshape(n, 1, c)
        dx = torch.addcmul(const.to(x.dtype), rows, coef.to(x.dtype)).addcmul_(dy, a_rows)
        dx = dx.view(n, h, w, c).permute(0, 3, 1, 2)
        return dx, None, *_parameter_grads(ctx.needs_input_grad, s1, p, weight, bias, scale)


def _parameter_grads(needs: tuple[bool, ...], s1: torch.Tensor, p: torch.Tensor, weight: torch.Tensor | None,
                     bias: torch.Tensor | None, scale: torch.Tensor | None) -> tuple:
    """(dweight, dbias, None for eps, dscale, dshift, None for silu) of SiLU(GroupNorm(x)·(1 + scale) +
    shift) from s1 = Σ dy and p = Σ dy·x̂ per (sample, channel) (float32 [N, C]; dy the gradient at the
    modulated map, x̂ the normalised one), in the order ``_GroupNormSiLU``'s inputs take them."""
    n, c = s1.shape
    factor = scale.float().reshape(n, c) + 1 if scale is not None else None
    d_weight = d_bias = d_scale = d_shift = None
    if weight is not None and needs[2]:
        d_weight = (p if factor is None else p * factor).sum(0).to(weight.dtype)
    if bias is not None and needs[3]:
        d_bias = (s1 if factor is None else s1 * factor).sum(0).to(bias.dtype)
    if scale is not None:
        gamma = weight.float()[None] if weight is not None else 1.0
        beta = bias.float()[None] if bias is not None else 0.0
        d_scale = (gamma * p + beta * s1).to(scale.dtype).view(scale.shape)
        d_shift = s1.to(scale.dtype).view(scale.shape)
    return d_weight, d_bias, None, d_scale, d_shift, None


class _NativeGroupNormSiLU(torch.autograd.Function):
    """SiLU(GroupNorm(x)·(1 + scale) + shift) (or without the SiLU) through the hand-written CPU kernel
    (``cpu_kernels``; two passes over the map forward, two backward, the normalised map recomputed from x
    and the saved float32 mean and 1/sqrt(var + eps) per (sample, group)). Same inputs as
    ``_GroupNormSiLU``; contiguous and channels_last maps, float32 and bfloat16."""

    @staticmethod
    def forward(ctx, x, groups, weight, bias, eps, scale, shift, silu):  # noqa: ANN001, ANN205
        out, mean, rstd = cpu_kernels.group_norm_silu_forward(x, groups, weight, bias, eps, scale, shift,
                                                              silu)
        ctx.save_for_backward(x, mean, rstd, weight, bias, scale, shift)
        ctx.groups, ctx.silu = groups, silu
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        x, mean, rstd, weight, bias, scale, shift = ctx.saved_tensors
        dx, s1, p = cpu_kernels.group_norm_silu_backward(x, grad, ctx.groups, weight, bias, scale, shift,
                                                         ctx.silu, mean, rstd)
        return dx, None, *_parameter_grads(ctx.needs_input_grad, s1, p, weight, bias, scale)


def _dual(*tensors: torch.Tensor | None) -> bool:
    """True where forward-mode AD tracks one of ``tensors`` (a JVP through dual numbers, as sCM's training
    takes): the explicit and compiled paths define no JVP, the library ops do."""
    return any(t is not None and fwAD.unpack_dual(t).tangent is not None for t in tensors)


def group_norm_silu_pays(norm: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                         *scale_shift: torch.Tensor) -> bool:
    """True where ``_GroupNormSiLU`` beats the library's GroupNorm: a float32/bfloat16 channels_last CPU
    map (not also contiguous) normalised by an ``nn.GroupNorm``, except a float32 map where autograd
    records nothing: there the library kernel with an in-place scale-shift and SiLU is faster
    (docs/performance.md); and not under forward-mode AD (``_dual``)."""
    return (isinstance(norm, nn.GroupNorm) and x.device.type == "cpu" and x.dim() == 4
            and (x.dtype == torch.bfloat16 or (x.dtype == torch.float32 and torch.is_grad_enabled()))
            and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
            and not _dual(x, norm.weight, norm.bias, *scale_shift))


def native_group_norm_pays(norm: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                           *scale_shift: torch.Tensor) -> bool:
    """True where ``_NativeGroupNormSiLU`` runs: an ``nn.GroupNorm`` over a map the compiled CPU kernel
    takes (``cpu_kernels.takes``), outside ``torch.compile`` (which traces the PyTorch path) and
    forward-mode AD (``_dual``)."""
    return (isinstance(norm, nn.GroupNorm) and not torch.compiler.is_compiling()
            and cpu_kernels.takes(x, norm.num_groups) and not _dual(x, norm.weight, norm.bias, *scale_shift))


def group_norm(norm: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``norm(x)``, through the compiled CPU kernel or ``_GroupNormSiLU`` (without the SiLU) where those beat
    the library kernel."""
    if native_group_norm_pays(norm, x):
        return _NativeGroupNormSiLU.apply(x, norm.num_groups, norm.weight, norm.bias, norm.eps, None, None,
                                          False)
    if group_norm_silu_pays(norm, x):
        return _GroupNormSiLU.apply(x, norm.num_groups, norm.weight, norm.bias, norm.eps, None, None, False)
    return norm(x)


def norm_silu(norm: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
              scale_shift: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """SiLU(norm(x)), or SiLU(norm(x)·(1 + scale) + shift) (ADM §3 adaptive group normalisation).

    CPU maps take the compiled kernel where it is built (``native_group_norm_pays``); without it,
    channels_last CPU maps take ``_GroupNormSiLU`` where that pays (``group_norm_silu_pays``); otherwise the
    scale-shift is one ``addcmul`` and both it and the SiLU run in place on the fresh normalised tensor only
    where autograd does not record them (SiLU's backward reads its input, so a recorded in-place SiLU first
    copies that input: a full extra pass over the map).
    """
    scale, shift = scale_shift if scale_shift is not None else (None, None)
    if native_group_norm_pays(norm, x, *(scale_shift or ())):
        return _NativeGroupNormSiLU.apply(x, norm.num_groups, norm.weight, norm.bias, norm.eps, scale, shift,
                                          True)
    if group_norm_silu_pays(norm, x, *(scale_shift or ())):
        return _GroupNormSiLU.apply(x, norm.num_groups, norm.weight, norm.bias, norm.eps, scale, shift, True)
    h = norm(x)
    recorded = torch.is_grad_enabled() and h.requires_grad
    if scale_shift is not None:
        fresh = (not recorded and h.dtype == shift.dtype == scale.dtype and h is not x
                 and not torch.compiler.is_compiling()  # inductor fuses it; Dynamo breaks at out=
                 and not _dual(h, scale, shift))  # forward-mode AD has no out= formulas
        h = torch.addcmul(shift, h, scale + 1, out=h if fresh else None)
    return F.silu(h, inplace=not recorded)
