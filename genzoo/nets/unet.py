"""A compact DDPM++-style UNet (Song et al. 2021, as configured in EDM's ``SongUNet``) for small images.

Noise labels get a sinusoidal embedding and a two-layer MLP; class labels (int64, index ``label_dim`` =
the null label of classifier-free guidance) and EDM's augmentation labels are added to it. Residual blocks
with GroupNorm/SiLU and an additive embedding, self-attention at chosen resolutions through
``scaled_dot_product_attention``, average-pool down- and nearest up-sampling inside residual blocks,
skip connections scaled by √½, zero-initialised output layers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from genzoo.nets import register
from genzoo.nets.fused import attend_channels, group_norm, norm_silu, upsample_nearest2x


def positional_embedding(positions: torch.Tensor, channels: int, max_positions: int = 10000,
                         endpoint: bool = True) -> torch.Tensor:
    """[cos | sin](p·ω_i) with ω_i = (1/max_positions)^(i/(C/2−1)) (sinusoidal embedding, endpoint form as in
    EDM's DDPM++), or ω_i = (1/max_positions)^(i/(C/2)) with ``endpoint=False`` (DDPM/ADM, EDM's ADM)."""
    half = channels // 2
    freqs = torch.arange(half, dtype=torch.float32, device=positions.device)
    freqs = freqs / (max(half - 1, 1) if endpoint else half)
    freqs = (1 / max_positions) ** freqs
    angles = positions.to(torch.float32)[:, None] * freqs[None]
    return torch.cat([angles.cos(), angles.sin()], dim=1)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=min(32, max(channels // 4, 1)), num_channels=channels, eps=1e-6)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GroupNorm → SiLU → (resample) → conv, + embedding, GroupNorm → SiLU → dropout → conv, (skip)·√½;
    then optional self-attention. With ``adaptive_scale`` the embedding gives a scale and a shift applied
    after the second GroupNorm (ADM's scale-shift norm) instead of a bias added before it."""

    def __init__(self, in_ch: int, out_ch: int, emb_ch: int, resample: str | None = None,
                 attention: bool = False, dropout: float = 0.0, channels_per_head: int = 64,
                 adaptive_scale: bool = False):
        super().__init__()
        self.resample = resample
        self.adaptive_scale = bool(adaptive_scale)
        self.norm0 = _norm(in_ch)
        self.conv0 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.affine = nn.Linear(emb_ch, out_ch * (2 if adaptive_scale else 1))
        self.norm1 = _norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv1 = _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None
        self.num_heads = max(out_ch // channels_per_head, 1) if attention else 0
        if attention:
            self.norm2 = _norm(out_ch)
            self.qkv = nn.Conv2d(out_ch, out_ch * 3, 1)
            self.proj = _zero(nn.Conv2d(out_ch, out_ch, 1))

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "down":
            return F.avg_pool2d(x, 2)
        if self.resample == "up":
            return upsample_nearest2x(x)
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        orig = self._resample(x)
        x = self.conv0(self._resample(norm_silu(self.norm0, x)))
        params = self.affine(emb)[:, :, None, None].to(x.dtype)
        if self.adaptive_scale:
            x = norm_silu(self.norm1, x, params.chunk(2, dim=1))
        else:
            x = norm_silu(self.norm1, x + params)
        x = self.conv1(self.dropout(x))
        x = (x + (self.skip(orig) if self.skip is not None else orig)) * math.sqrt(0.5)
        if self.num_heads:
            n, c, h, w = x.shape
            qkv = self.qkv(group_norm(self.norm2, x))
            qkv = qkv.reshape(n, 3, self.num_heads, c // self.num_heads, h * w)
            q, k, v = qkv.unbind(1)
            a = attend_channels(q, k, v)
            x = (x + self.proj(a.reshape(n, c, h, w))) * math.sqrt(0.5)
        return x


@register("ddpmpp")
class DDPMppUNet(nn.Module):
    """DDPM++-style UNet: ``forward(x, noise_labels, class_labels=None, augment_labels=None) -> F(x)``."""

    def __init__(self, resolution: int = 32, in_channels: int = 3, out_channels: int | None = None,
                 label_dim: int = 0, model_channels: int = 64, channel_mult: Sequence[int] = (1, 2, 2),
                 num_blocks: int = 2, attn_resolutions: Sequence[int] = (16,), dropout: float = 0.0,
                 augment_dim: int = 0, channels_per_head: int = 64, adaptive_scale: bool = False):
        super().__init__()
        self.resolution, self.in_channels = int(resolution), int(in_channels)
        self.out_channels = int(out_channels or in_channels)
        self.label_dim, self.augment_dim = int(label_dim), int(augment_dim)
        noise_ch, emb_ch = model_channels, 4 * model_channels
        self.noise_channels = noise_ch
        self.label_embed = nn.Embedding(self.label_dim + 1, noise_ch) if self.label_dim else None
        self.takes_null_label = bool(self.label_dim)  # index label_dim: the dropped label of CFG training
        self.augment_embed = nn.Linear(self.augment_dim, noise_ch, bias=False) if self.augment_dim else None
        self.map0, self.map1 = nn.Linear(noise_ch, emb_ch), nn.Linear(emb_ch, emb_ch)

        blk = dict(emb_ch=emb_ch, dropout=dropout, channels_per_head=channels_per_head,
                   adaptive_scale=adaptive_scale)
        attn = {int(r) for r in attn_resolutions}
        self.conv_in = nn.Conv2d(in_channels, model_channels, 3, padding=1)
        self.encoder = nn.ModuleList()
        skips, ch, res = [model_channels], model_channels, self.resolution
        for level, mult in enumerate(channel_mult):
            if level > 0:
                res //= 2
                self.encoder.append(ResBlock(ch, ch, resample="down", **blk))
                skips.append(ch)
            for _ in range(num_blocks):
                self.encoder.append(ResBlock(ch, model_channels * mult, attention=res in attn, **blk))
                ch = model_channels * mult
                skips.append(ch)
        self.middle = nn.ModuleList([ResBlock(ch, ch, attention=True, **blk), ResBlock(ch, ch, **blk)])
        self.decoder = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(num_blocks + 1):
                out_ch = model_channels * mult
                self.decoder.append(ResBlock(ch + skips.pop(), out_ch, attention=res in attn, **blk))
                ch = model_channels * mult
            if level > 0:
                res *= 2
                self.decoder.append(ResBlock(ch, ch, resample="up", **blk))
        self.norm_out = _norm(ch)
        self.conv_out = _zero(nn.Conv2d(ch, self.out_channels, 3, padding=1))

    def embedding(self, noise_labels: torch.Tensor, class_labels: torch.Tensor | None,
                  augment_labels: torch.Tensor | None, batch: int) -> torch.Tensor:
        emb = positional_embedding(noise_labels.reshape(-1).expand(batch) if noise_labels.numel() == 1
                                   else noise_labels.reshape(-1), self.noise_channels)
        if self.label_embed is not None:
            if class_labels is None:
                class_labels = torch.full((batch,), self.label_dim, device=emb.device)
            # −1 (no label) and the null index both select the "dropped label" embedding.
            class_labels = torch.where(class_labels < 0, self.label_dim, class_labels.to(torch.int64))
            emb = emb + self.label_embed(class_labels)
        if self.augment_embed is not None and augment_labels is not None:
            emb = emb + self.augment_embed(augment_labels.to(emb.dtype))
        return F.silu(self.map1(F.silu(self.map0(emb))))

    def forward(self, x: torch.Tensor, noise_labels: torch.Tensor, class_labels: torch.Tensor | None = None,
                augment_labels: torch.Tensor | None = None, **_: object) -> torch.Tensor:
        emb = self.embedding(noise_labels, class_labels, augment_labels, x.shape[0])
        h = self.conv_in(x)
        skips = [h]
        for block in self.encoder:
            h = block(h, emb)
            skips.append(h)
        for block in self.middle:
            h = block(h, emb)
        for block in self.decoder:
            if block.resample != "up":
                h = torch.cat([h, skips.pop()], dim=1)
            h = block(h, emb)
        return self.conv_out(norm_silu(self.norm_out, h))
