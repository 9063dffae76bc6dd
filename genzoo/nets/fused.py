"""Fewer, fused kernels for the layers every network shares: attention and GroupNorm + SiLU.

``scaled_dot_product_attention`` dispatches to its fused kernels (flash attention on CPU and CUDA,
memory-efficient attention on CUDA) only when the last dimension of q, k and v is contiguous; the
transposed views that convolution layouts produce ([N, heads, d, L] seen as [N, heads, L, d]) silently
fall back to the unfused math path (explicit matmul, softmax and masking kernels). These helpers lay the
tokens out once so the fused kernels run.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def token_major(t: torch.Tensor) -> torch.Tensor:
    """[..., d, L] channel-major -> contiguous [..., L, d], the layout the fused kernels take."""
    return t.transpose(-1, -2).contiguous()


def attend_channels(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs) -> torch.Tensor:
    """softmax(scale·qᵀk [+ mask])·v (Vaswani et al. 2017, Eq. 1) over channel-major [N, heads, d, L]
    inputs, returned channel-major [N, heads, d, L]; ``kwargs`` go to ``scaled_dot_product_attention``."""
    out = F.scaled_dot_product_attention(token_major(q), token_major(k), token_major(v), **kwargs)
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
    out = F.scaled_dot_product_attention(q, k, v, **kwargs)  # [N, heads, L, d]
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


def norm_silu(norm: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
              scale_shift: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """SiLU(norm(x)), or SiLU(norm(x)·(1 + scale) + shift) (ADM §3 adaptive group normalisation), with the
    scale-shift as one ``addcmul`` and the SiLU in place on the fresh normalised tensor (autograd keeps
    what it needs: neither group_norm's nor addcmul's backward reads their output)."""
    h = norm(x)
    if scale_shift is not None:
        scale, shift = scale_shift
        h = torch.addcmul(shift, h, scale + 1)
    return F.silu(h, inplace=True)
