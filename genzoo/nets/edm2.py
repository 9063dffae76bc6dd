"""EDM2's magnitude-preserving UNet (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of
Diffusion Models", Fig. 21), with the state-dict names of NVlabs/edm2 ``training/networks_edm2.py``.

Every layer keeps unit expected magnitude for unit-magnitude inputs: weights are normalised per output
channel and scaled by 1/√fan_in (MPConv; in training mode the stored weight is also renormalised, "forced
weight normalisation"), SiLU is divided by its output magnitude for a unit normal input, sums and
concatenations are weighted so the result keeps unit magnitude, and there are no biases or normalisation
layers with learned parameters. The noise level enters through magnitude-preserving Fourier features.

The preconditioning (``Precond`` of the official code: EDM's scalings plus the learned ``logvar`` head) is
:class:`genzoo.diffusion.precond.EDM2Denoiser`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from genzoo.nets import register
from genzoo.nets.fused import attend_channels, upsample_nearest2x
from genzoo.nets.labels import one_hot_labels

Tensor = torch.Tensor

#: E[silu(x)²]^½ for x ~ N(0, 1), rounded as in the paper (EDM2 eq. 81)
SILU_MAGNITUDE = 0.596


def normalize(x: Tensor, dim: int | Sequence[int] | None = None, eps: float = 1e-4) -> Tensor:
    """x / (eps + ‖x‖·√(n/N)) over ``dim`` (default: all but the first): unit RMS per slice (EDM2 eq. 47)."""
    if dim is None:
        dim = list(range(1, x.ndim))
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True, dtype=torch.float32)
    norm = torch.add(eps, norm, alpha=math.sqrt(norm.numel() / x.numel()))
    return x / norm.to(x.dtype)


def resample(x: Tensor, f: Sequence[float] = (1, 1), mode: str = "keep") -> Tensor:
    """Down- or up-sample by 2 with the separable filter ``f`` (normalised), or keep ``x``.

    With the default box filter [1, 1] this is 2×2 average pooling and nearest-neighbour upsampling.
    """
    if mode == "keep":
        return x
    if mode not in ("down", "up"):
        raise ValueError(f"resample mode: expected keep, down or up, got {mode!r}")
    if len(f) % 2:
        raise ValueError(f"resample filter: expected an even number of taps, got {list(f)}")
    if list(f) == [1, 1]:
        return F.avg_pool2d(x, 2) if mode == "down" else upsample_nearest2x(x)
    taps = torch.as_tensor(f, dtype=torch.float32)
    taps = taps / taps.sum()
    kernel = torch.outer(taps, taps).to(x.device, x.dtype)[None, None].tile([x.shape[1], 1, 1, 1])
    pad = (len(f) - 1) // 2
    if mode == "down":
        return F.conv2d(x, kernel, groups=x.shape[1], stride=2, padding=(pad,))
    return F.conv_transpose2d(x, kernel * 4, groups=x.shape[1], stride=2, padding=(pad,))


def mp_silu(x: Tensor) -> Tensor:
    """Magnitude-preserving SiLU: silu(x)/0.596 (EDM2 eq. 81)."""
    return F.silu(x) / SILU_MAGNITUDE


def mp_sum(a: Tensor, b: Tensor, t: float = 0.5) -> Tensor:
    """Magnitude-preserving weighted sum: ((1−t)·a + t·b)/√((1−t)² + t²) (EDM2 eq. 88)."""
    return a.lerp(b, t) / math.sqrt((1 - t) ** 2 + t ** 2)


def mp_cat(a: Tensor, b: Tensor, dim: int = 1, t: float = 0.5) -> Tensor:
    """Magnitude-preserving concatenation with balance ``t`` between a (0) and b (1) (EDM2 eq. 103)."""
    na, nb = a.shape[dim], b.shape[dim]
    scale = math.sqrt((na + nb) / ((1 - t) ** 2 + t ** 2))
    return torch.cat([a * (scale / math.sqrt(na) * (1 - t)), b * (scale / math.sqrt(nb) * t)], dim=dim)


class MPFourier(nn.Module):
    """Magnitude-preserving Fourier features √2·cos(2π(f·x + φ)), f ~ N(0, bandwidth²), φ ~ U[0, 1)
    (EDM2 eq. 75); the buffers hold 2πf and 2πφ."""

    def __init__(self, num_channels: int, bandwidth: float = 1.0):
        super().__init__()
        self.register_buffer("freqs", 2 * math.pi * torch.randn(num_channels) * bandwidth)
        self.register_buffer("phases", 2 * math.pi * torch.rand(num_channels))

    def forward(self, x: Tensor) -> Tensor:
        y = torch.outer(x.to(torch.float32).reshape(-1), self.freqs.to(torch.float32))
        y = (y + self.phases.to(torch.float32)).cos() * math.sqrt(2)
        return y.to(x.dtype)


class MPConv(nn.Module):
    """Magnitude-preserving convolution (``kernel`` [k, k]) or linear layer (``kernel`` []):
    weight normalised per output channel × gain/√fan_in (EDM2 eq. 47); in training mode the stored weight
    is itself renormalised first (forced weight normalisation, EDM2 eq. 66). No bias."""

    def __init__(self, in_channels: int, out_channels: int, kernel: Sequence[int]):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, *kernel))

    def forward(self, x: Tensor, gain: float | Tensor = 1.0) -> Tensor:
        w = self.weight.to(torch.float32)
        if self.training:
            with torch.no_grad():
                self.weight.copy_(normalize(w))
        w = normalize(w)
        w = (w * (gain / math.sqrt(w[0].numel()))).to(x.dtype)
        if w.ndim == 2:
            return x @ w.t()
        return F.conv2d(x, w, padding=(w.shape[-1] // 2,))


class Block(nn.Module):
    """Encoder ('enc') or decoder ('dec') block of EDM2 (Fig. 21): resample, (enc: skip conv and pixel
    norm), residual branch conv → ×(1 + emb) → conv joined by mp_sum, optional cosine self-attention
    (pixel-normalised q, k, v), activations clipped to ±``clip_act``."""

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int, flavor: str = "enc",
                 resample_mode: str = "keep", resample_filter: Sequence[float] = (1, 1),
                 attention: bool = False, channels_per_head: int = 64, dropout: float = 0.0,
                 res_balance: float = 0.3, attn_balance: float = 0.3, clip_act: float | None = 256):
        super().__init__()
        if flavor not in ("enc", "dec"):
            raise ValueError(f"Block flavor: expected enc or dec, got {flavor!r}")
        self.out_channels = int(out_channels)
        self.flavor, self.resample_mode = flavor, resample_mode
        self.resample_filter = list(resample_filter)
        self.num_heads = out_channels // channels_per_head if attention else 0
        self.dropout = float(dropout)
        self.res_balance, self.attn_balance = float(res_balance), float(attn_balance)
        self.clip_act = clip_act
        self.emb_gain = nn.Parameter(torch.zeros([]))
        self.conv_res0 = MPConv(out_channels if flavor == "enc" else in_channels, out_channels, [3, 3])
        self.emb_linear = MPConv(emb_channels, out_channels, [])
        self.conv_res1 = MPConv(out_channels, out_channels, [3, 3])
        self.conv_skip = MPConv(in_channels, out_channels, [1, 1]) if in_channels != out_channels else None
        self.attn_qkv = MPConv(out_channels, out_channels * 3, [1, 1]) if self.num_heads else None
        self.attn_proj = MPConv(out_channels, out_channels, [1, 1]) if self.num_heads else None

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        x = resample(x, self.resample_filter, self.resample_mode)
        if self.flavor == "enc":
            if self.conv_skip is not None:
                x = self.conv_skip(x)
            x = normalize(x, dim=1)  # pixel norm
        y = self.conv_res0(mp_silu(x))
        scale = self.emb_linear(emb, gain=self.emb_gain) + 1
        y = mp_silu(y * scale[:, :, None, None].to(y.dtype))
        if self.training and self.dropout:
            y = F.dropout(y, p=self.dropout)
        y = self.conv_res1(y)
        if self.flavor == "dec" and self.conv_skip is not None:
            x = self.conv_skip(x)
        x = mp_sum(x, y, t=self.res_balance)
        if self.num_heads:
            x = mp_sum(x, self.attention(x), t=self.attn_balance)
        if self.clip_act is not None:
            x = x.clamp(-self.clip_act, self.clip_act)
        return x

    def attention(self, x: Tensor) -> Tensor:
        """Cosine attention: qkv channels laid out (head, channel, 3); q, k, v pixel-normalised per head,
        softmax(q·k/√d) — the default scaling of ``scaled_dot_product_attention``."""
        n, c, h, w = x.shape
        qkv = self.attn_qkv(x).reshape(n, self.num_heads, -1, 3, h * w)
        q, k, v = normalize(qkv, dim=2).unbind(3)  # each [n, heads, d, hw]
        y = attend_channels(q, k, v)  # contiguous tokens, so the fused kernel runs
        return self.attn_proj(y.reshape(n, c, h, w))


@register("edm2")
class EDM2UNet(nn.Module):
    """EDM2's UNet: ``forward(x, noise_labels, class_labels=None) -> F(x)``.

    ``noise_labels`` is c_noise (¼ ln σ); ``class_labels`` one-hot float [N, label_dim] or integer [N]
    (:func:`genzoo.nets.labels.one_hot_labels`: the null index ``label_dim``, −1 and None are the zero row,
    the official "no label"). Channel widths are ``model_channels × channel_mult`` per level; the noise
    embedding has ``model_channels × channel_mult_noise`` channels (default: the first level's) and the
    block embedding ``model_channels × channel_mult_emb`` (default: the widest level's).
    """

    label_input = "one_hot"  # the label form genzoo's Denoiser hands this network

    def __init__(self, img_resolution: int, img_channels: int, label_dim: int = 0,
                 model_channels: int = 192, channel_mult: Sequence[int] = (1, 2, 3, 4),
                 channel_mult_noise: int | None = None, channel_mult_emb: int | None = None,
                 num_blocks: int = 3, attn_resolutions: Sequence[int] = (16, 8),
                 label_balance: float = 0.5, concat_balance: float = 0.5,
                 resample_filter: Sequence[float] = (1, 1), channels_per_head: int = 64,
                 dropout: float = 0.0, res_balance: float = 0.3, attn_balance: float = 0.3,
                 clip_act: float | None = 256):
        super().__init__()
        self.img_resolution, self.img_channels = int(img_resolution), int(img_channels)
        self.label_dim = int(label_dim)
        # the names genzoo's Denoiser and samplers read
        self.resolution = self.img_resolution
        self.in_channels = self.out_channels = self.img_channels
        cblock = [model_channels * m for m in channel_mult]
        cnoise = model_channels * channel_mult_noise if channel_mult_noise is not None else cblock[0]
        cemb = model_channels * channel_mult_emb if channel_mult_emb is not None else max(cblock)
        self.label_balance, self.concat_balance = float(label_balance), float(concat_balance)
        attn = {int(r) for r in attn_resolutions}
        block_kw = dict(resample_filter=resample_filter, channels_per_head=channels_per_head, dropout=dropout,
                        res_balance=res_balance, attn_balance=attn_balance, clip_act=clip_act)
        self.out_gain = nn.Parameter(torch.zeros([]))

        self.emb_fourier = MPFourier(cnoise)
        self.emb_noise = MPConv(cnoise, cemb, [])
        self.emb_label = MPConv(self.label_dim, cemb, []) if self.label_dim else None

        self.enc = nn.ModuleDict()
        cout = img_channels + 1  # the input gets a constant channel of ones (bias substitute)
        for level, channels in enumerate(cblock):
            res = self.img_resolution >> level
            if level == 0:
                self.enc[f"{res}x{res}_conv"] = MPConv(cout, channels, [3, 3])
                cout = channels
            else:
                self.enc[f"{res}x{res}_down"] = Block(cout, cout, cemb, "enc", resample_mode="down",
                                                      **block_kw)
            for idx in range(num_blocks):
                self.enc[f"{res}x{res}_block{idx}"] = Block(cout, channels, cemb, "enc",
                                                            attention=res in attn, **block_kw)
                cout = channels

        self.dec = nn.ModuleDict()
        skips = [block.out_channels for block in self.enc.values()]
        for level, channels in reversed(list(enumerate(cblock))):
            res = self.img_resolution >> level
            if level == len(cblock) - 1:
                self.dec[f"{res}x{res}_in0"] = Block(cout, cout, cemb, "dec", attention=True, **block_kw)
                self.dec[f"{res}x{res}_in1"] = Block(cout, cout, cemb, "dec", **block_kw)
            else:
                self.dec[f"{res}x{res}_up"] = Block(cout, cout, cemb, "dec", resample_mode="up", **block_kw)
            for idx in range(num_blocks + 1):
                self.dec[f"{res}x{res}_block{idx}"] = Block(cout + skips.pop(), channels, cemb, "dec",
                                                            attention=res in attn, **block_kw)
                cout = channels
        self.out_conv = MPConv(cout, img_channels, [3, 3])

    def embedding(self, noise_labels: Tensor, class_labels: Tensor | None) -> Tensor:
        """mp_silu(mp_sum(noise embedding, label embedding of √label_dim·y, label_balance))."""
        emb = self.emb_noise(self.emb_fourier(noise_labels))
        if self.emb_label is not None:
            labels = one_hot_labels(class_labels, self.label_dim, emb.shape[0], emb.device)
            emb = mp_sum(emb, self.emb_label(labels * math.sqrt(labels.shape[1])), t=self.label_balance)
        return mp_silu(emb)

    def forward(self, x: Tensor, noise_labels: Tensor, class_labels: Tensor | None = None) -> Tensor:
        emb = self.embedding(noise_labels, class_labels)
        x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
        skips = []
        for name, block in self.enc.items():
            x = block(x) if name.endswith("_conv") else block(x, emb)
            skips.append(x)
        for name, block in self.dec.items():
            if "block" in name:
                x = mp_cat(x, skips.pop(), t=self.concat_balance)
            x = block(x, emb)
        return self.out_conv(x, gain=self.out_gain)
