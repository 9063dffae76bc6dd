"""EDM's networks (Karras et al. 2022, ``training/networks.py`` of NVlabs/edm), with the official names.

``SongUNet`` is EDM's re-implementation of DDPM++ and NCSN++ (Song et al. 2021): positional or random
Fourier noise embedding, a standard, skip or residual encoder, a standard or skip decoder, FIR resampling
with [1,1] or [1,3,3,1]. ``DhariwalUNet`` is EDM's ADM (Dhariwal & Nichol 2021). Constructor arguments,
module names and parameter names equal the official ones, so the ``init_kwargs`` and tensors recorded in
a released snapshot rebuild the network one to one (``genzoo.checkpoints.edm``).

Both take ``forward(x, noise_labels, class_labels=None, augment_labels=None)`` with class labels as
EDM's one-hot float rows ``[B, label_dim]`` or as int indices ``[B]`` (index ``label_dim`` is the
dropped label, the zero row). Layers cast their weights to the input's dtype, as the official ones do,
so EDM's ``use_fp16`` is a choice of input dtype (see :class:`genzoo.diffusion.precond.Denoiser`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from genzoo.nets import register
from genzoo.nets.fused import attend_channels, group_norm, norm_silu
from genzoo.nets.labels import one_hot_labels
from genzoo.nets.unet import positional_embedding


def weight_init(shape: Sequence[int], mode: str, fan_in: int, fan_out: int) -> torch.Tensor:
    """EDM's initialisations: Xavier (Glorot & Bengio 2010) or Kaiming (He et al. 2015), uniform or normal."""
    if mode == "xavier_uniform":
        return math.sqrt(6 / (fan_in + fan_out)) * (torch.rand(*shape) * 2 - 1)
    if mode == "xavier_normal":
        return math.sqrt(2 / (fan_in + fan_out)) * torch.randn(*shape)
    if mode == "kaiming_uniform":
        return math.sqrt(3 / fan_in) * (torch.rand(*shape) * 2 - 1)
    if mode == "kaiming_normal":
        return math.sqrt(1 / fan_in) * torch.randn(*shape)
    raise ValueError(f"unknown init mode {mode!r}")


class Linear(nn.Module):
    """``x @ Wᵀ + b`` with W and b cast to x's dtype."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 init_mode: str = "kaiming_normal", init_weight: float = 1.0, init_bias: float = 0.0):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        fans = dict(mode=init_mode, fan_in=in_features, fan_out=out_features)
        self.weight = nn.Parameter(weight_init([out_features, in_features], **fans) * init_weight)
        self.bias = nn.Parameter(weight_init([out_features], **fans) * init_bias) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))


def resample_kernel(taps: Sequence[float]) -> torch.Tensor:
    """The separable 2-D FIR kernel f fᵀ / (Σf)², shape [1, 1, k, k] (EDM's resample filter)."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    return torch.outer(f, f)[None, None] / f.sum().square()


class Conv2d(nn.Module):
    """A convolution with optional 2× FIR up- or downsampling before it (fused into it for
    ``fused_resample``); ``kernel=0`` is resampling alone. The filter is the buffer ``resample_filter``."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, bias: bool = True, up: bool = False,
                 down: bool = False, resample_filter: Sequence[float] = (1, 1), fused_resample: bool = False,
                 init_mode: str = "kaiming_normal", init_weight: float = 1.0, init_bias: float = 0.0):
        if up and down:
            raise ValueError("Conv2d: up and down are exclusive")
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.up, self.down, self.fused_resample = bool(up), bool(down), bool(fused_resample)
        k2 = kernel * kernel
        fans = dict(mode=init_mode, fan_in=in_channels * k2, fan_out=out_channels * k2)
        shape = [out_channels, in_channels, kernel, kernel]
        self.weight = nn.Parameter(weight_init(shape, **fans) * init_weight) if kernel else None
        self.bias = nn.Parameter(weight_init([out_channels], **fans) * init_bias) if kernel and bias else None
        self.register_buffer("resample_filter", resample_kernel(resample_filter) if up or down else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) if self.weight is not None else None
        f = self.resample_filter.to(x.dtype) if self.resample_filter is not None else None
        w_pad = w.shape[-1] // 2 if w is not None else 0
        f_pad = (f.shape[-1] - 1) // 2 if f is not None else 0
        if self.fused_resample and self.up and w is not None:
            x = F.conv_transpose2d(x, f.mul(4).tile([self.in_channels, 1, 1, 1]), groups=self.in_channels,
                                   stride=2, padding=w_pad + f_pad)
            x = F.conv2d(x, w)
        elif self.fused_resample and self.down and w is not None:
            x = F.conv2d(x, w, padding=w_pad + f_pad)
            x = F.conv2d(x, f.tile([self.out_channels, 1, 1, 1]), groups=self.out_channels, stride=2)
        else:
            if self.up:
                x = F.conv_transpose2d(x, f.mul(4).tile([self.in_channels, 1, 1, 1]), groups=self.in_channels,
                                       stride=2, padding=f_pad)
            if self.down:
                x = F.conv2d(x, f.tile([self.in_channels, 1, 1, 1]), groups=self.in_channels, stride=2,
                             padding=f_pad)
            if w is not None:
                x = F.conv2d(x, w, padding=w_pad)
        if self.bias is not None:
            x = x + self.bias.to(x.dtype).reshape(1, -1, 1, 1)
        return x


class GroupNorm(nn.GroupNorm):
    """Group normalisation with min(num_groups, C / min_channels_per_group) groups (an ``nn.GroupNorm``, so
    ``norm_silu`` gives it the fused CPU kernel)."""

    def __init__(self, num_channels: int, num_groups: int = 32, min_channels_per_group: int = 4,
                 eps: float = 1e-5):
        groups = min(num_groups, num_channels // min_channels_per_group)
        super().__init__(groups, num_channels, eps=float(eps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, self.num_groups, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)


def attention(qkv: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Multi-head self-attention over pixels, softmax(qᵀk/√d)·v, from qkv [N, 3C, H, W] whose channels are
    ordered (heads, d, 3) as in EDM's UNetBlock; returns [N, C, H, W]. Half-precision inputs are attended
    in float32, as EDM computes the attention weights."""
    n, c3, h, w = qkv.shape
    c = c3 // 3
    q, k, v = qkv.reshape(n, num_heads, c // num_heads, 3, h * w).unbind(3)  # each [N, heads, d, L]
    dtype = qkv.dtype
    work = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    a = attend_channels(q.to(work), k.to(work), v.to(work))  # [N, heads, d, L]
    return a.reshape(n, c, h, w).to(dtype)


class UNetBlock(nn.Module):
    """EDM's unified block: GroupNorm → SiLU → conv (with up/down) → + embedding (additive, or scale and
    shift with ``adaptive_scale``) → GroupNorm → SiLU → dropout → conv, plus the skip, times ``skip_scale``;
    then optional self-attention with its own residual and ``skip_scale``."""

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int, up: bool = False,
                 down: bool = False, attention: bool = False, num_heads: int | None = None,
                 channels_per_head: int = 64, dropout: float = 0.0, skip_scale: float = 1.0,
                 eps: float = 1e-5,
                 resample_filter: Sequence[float] = (1, 1), resample_proj: bool = False,
                 adaptive_scale: bool = True, init: dict | None = None, init_zero: dict | None = None,
                 init_attn: dict | None = None):
        super().__init__()
        init = dict(init or {})
        init_zero = dict(init_weight=0) if init_zero is None else dict(init_zero)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.num_heads = 0 if not attention else (
            int(num_heads) if num_heads is not None else out_channels // channels_per_head)
        self.dropout, self.skip_scale = float(dropout), float(skip_scale)
        self.adaptive_scale = bool(adaptive_scale)
        self.norm0 = GroupNorm(in_channels, eps=eps)
        self.conv0 = Conv2d(in_channels, out_channels, 3, up=up, down=down, resample_filter=resample_filter,
                            **init)
        self.affine = Linear(emb_channels, out_channels * (2 if adaptive_scale else 1), **init)
        self.norm1 = GroupNorm(out_channels, eps=eps)
        self.conv1 = Conv2d(out_channels, out_channels, 3, **init_zero)
        self.skip = None
        if out_channels != in_channels or up or down:
            kernel = 1 if resample_proj or out_channels != in_channels else 0
            self.skip = Conv2d(in_channels, out_channels, kernel, up=up, down=down,
                               resample_filter=resample_filter, **init)
        if self.num_heads:
            self.norm2 = GroupNorm(out_channels, eps=eps)
            self.qkv = Conv2d(out_channels, out_channels * 3, 1, **(init if init_attn is None else init_attn))
            self.proj = Conv2d(out_channels, out_channels, 1, **init_zero)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        orig = x
        x = self.conv0(norm_silu(self.norm0, x))
        params = self.affine(emb)[:, :, None, None].to(x.dtype)
        if self.adaptive_scale:
            x = norm_silu(self.norm1, x, params.chunk(2, dim=1))
        else:
            x = norm_silu(self.norm1, x + params)
        x = self.conv1(F.dropout(x, p=self.dropout, training=self.training))
        x = (x + (self.skip(orig) if self.skip is not None else orig)) * self.skip_scale
        if self.num_heads:
            h = attention(self.qkv(group_norm(self.norm2, x)), self.num_heads)
            x = (self.proj(h) + x) * self.skip_scale
        return x


class PositionalEmbedding(nn.Module):
    """Sinusoidal noise embedding [cos | sin] (no parameters)."""

    def __init__(self, num_channels: int, max_positions: int = 10000, endpoint: bool = False):
        super().__init__()
        self.num_channels, self.max_positions = int(num_channels), int(max_positions)
        self.endpoint = bool(endpoint)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return positional_embedding(x, self.num_channels, self.max_positions, self.endpoint).to(x.dtype)


class FourierEmbedding(nn.Module):
    """Random Fourier features [cos | sin](2π f x) of NCSN++, f ~ N(0, scale²) stored as ``freqs``."""

    def __init__(self, num_channels: int, scale: float = 16):
        super().__init__()
        self.register_buffer("freqs", torch.randn(num_channels // 2) * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.outer(x, (2 * math.pi * self.freqs).to(x.dtype))
        return torch.cat([x.cos(), x.sin()], dim=1)


def _set_io(net: nn.Module, img_resolution: int, in_channels: int, out_channels: int, label_dim: int,
            augment_dim: int, label_dropout: float) -> None:
    net.resolution, net.in_channels = int(img_resolution), int(in_channels)
    net.out_channels = int(out_channels)
    net.label_dim, net.augment_dim, net.label_dropout = int(label_dim), int(augment_dim), float(label_dropout)


def _noise_batch(noise_labels: torch.Tensor, batch: int) -> torch.Tensor:
    noise_labels = noise_labels.reshape(-1).to(torch.float32)
    return noise_labels.expand(batch) if noise_labels.numel() == 1 else noise_labels


def _label_rows(net: nn.Module, class_labels: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """One-hot rows, with EDM's label dropout (rows zeroed with probability ``label_dropout``) in training."""
    rows = one_hot_labels(class_labels, net.label_dim, x.shape[0], x.device)
    if rows.shape[0] == 1 and x.shape[0] > 1:
        rows = rows.expand(x.shape[0], -1)
    if net.training and net.label_dropout:
        rows = rows * (torch.rand([x.shape[0], 1], device=x.device) >= net.label_dropout).to(rows.dtype)
    return rows


@register("songunet")
class SongUNet(nn.Module):
    """DDPM++ / NCSN++ as EDM builds them (``SongUNet`` of NVlabs/edm); arguments as the official ones.

    DDPM++: ``embedding_type='positional', channel_mult_noise=1, encoder_type='standard',
    resample_filter=[1,1]``; NCSN++: ``'fourier', 2, 'residual', [1,3,3,1]``.
    """

    label_input = "one_hot"

    def __init__(self, img_resolution: int, in_channels: int, out_channels: int, label_dim: int = 0,
                 augment_dim: int = 0, model_channels: int = 128, channel_mult: Sequence[int] = (1, 2, 2, 2),
                 channel_mult_emb: int = 4, num_blocks: int = 4, attn_resolutions: Sequence[int] = (16,),
                 dropout: float = 0.10, label_dropout: float = 0.0, embedding_type: str = "positional",
                 channel_mult_noise: int = 1, encoder_type: str = "standard", decoder_type: str = "standard",
                 resample_filter: Sequence[float] = (1, 1)):
        for name, value, allowed in (("embedding_type", embedding_type, ("fourier", "positional")),
                                     ("encoder_type", encoder_type, ("standard", "skip", "residual")),
                                     ("decoder_type", decoder_type, ("standard", "skip"))):
            if value not in allowed:
                raise ValueError(f"SongUNet: {name} must be one of {allowed}, got {value!r}")
        super().__init__()
        _set_io(self, img_resolution, in_channels, out_channels, label_dim, augment_dim, label_dropout)
        emb_channels = model_channels * channel_mult_emb
        noise_channels = model_channels * channel_mult_noise
        init = dict(init_mode="xavier_uniform")
        init_zero = dict(init_mode="xavier_uniform", init_weight=1e-5)
        init_attn = dict(init_mode="xavier_uniform", init_weight=math.sqrt(0.2))
        block = dict(emb_channels=emb_channels, num_heads=1, dropout=dropout, skip_scale=math.sqrt(0.5),
                     eps=1e-6,
                     resample_filter=resample_filter, resample_proj=True, adaptive_scale=False, init=init,
                     init_zero=init_zero, init_attn=init_attn)

        self.map_noise = (PositionalEmbedding(noise_channels, endpoint=True) if embedding_type == "positional"
                          else FourierEmbedding(noise_channels))
        self.map_label = Linear(label_dim, noise_channels, **init) if label_dim else None
        self.map_augment = Linear(augment_dim, noise_channels, bias=False, **init) if augment_dim else None
        self.map_layer0 = Linear(noise_channels, emb_channels, **init)
        self.map_layer1 = Linear(emb_channels, emb_channels, **init)

        self.enc = nn.ModuleDict()
        cout = caux = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                cin, cout = cout, model_channels
                self.enc[f"{res}x{res}_conv"] = Conv2d(cin, cout, 3, **init)
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(cout, cout, down=True, **block)
                if encoder_type == "skip":
                    self.enc[f"{res}x{res}_aux_down"] = Conv2d(caux, caux, 0, down=True,
                                                               resample_filter=resample_filter)
                    self.enc[f"{res}x{res}_aux_skip"] = Conv2d(caux, cout, 1, **init)
                if encoder_type == "residual":
                    self.enc[f"{res}x{res}_aux_residual"] = Conv2d(caux, cout, 3, down=True,
                                                                   resample_filter=resample_filter,
                                                                   fused_resample=True, **init)
                    caux = cout
            for idx in range(num_blocks):
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=res in attn_resolutions,
                                                                **block)
        skips = [b.out_channels for name, b in self.enc.items() if "aux" not in name]

        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            attention = (num_blocks,) if res in attn_resolutions else ()  # the level's last block only
            cout = _decoder_level(self.dec, res, level == len(channel_mult) - 1, cout, model_channels * mult,
                                  skips, num_blocks, attention, block)
            if decoder_type == "skip" or level == 0:
                if decoder_type == "skip" and level < len(channel_mult) - 1:
                    self.dec[f"{res}x{res}_aux_up"] = Conv2d(out_channels, out_channels, 0, up=True,
                                                             resample_filter=resample_filter)
                self.dec[f"{res}x{res}_aux_norm"] = GroupNorm(cout, eps=1e-6)
                self.dec[f"{res}x{res}_aux_conv"] = Conv2d(cout, out_channels, 3, **init_zero)

    def forward(self, x: torch.Tensor, noise_labels: torch.Tensor, class_labels: torch.Tensor | None = None,
                augment_labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.map_noise(_noise_batch(noise_labels, x.shape[0]))
        emb = emb.reshape(emb.shape[0], 2, -1).flip(1).reshape(*emb.shape)  # [sin | cos], as in DDPM++
        if self.map_label is not None:
            rows = _label_rows(self, class_labels, x)
            emb = emb + self.map_label(rows * math.sqrt(self.map_label.in_features))
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels.to(emb.dtype))
        emb = F.silu(self.map_layer1(F.silu(self.map_layer0(emb))))

        skips, aux = [], x
        for name, block in self.enc.items():
            if "aux_down" in name:
                aux = block(aux)
            elif "aux_skip" in name:
                x = skips[-1] = x + block(aux)
            elif "aux_residual" in name:
                x = skips[-1] = aux = (x + block(aux)) / math.sqrt(2)
            else:
                x = block(x, emb) if isinstance(block, UNetBlock) else block(x)
                skips.append(x)

        aux = tmp = None
        for name, block in self.dec.items():
            if "aux_up" in name:
                aux = block(aux)
            elif "aux_norm" in name:
                tmp = block(x)
            elif "aux_conv" in name:
                tmp = block(F.silu(tmp))
                aux = tmp if aux is None else tmp + aux
            else:
                if x.shape[1] != block.in_channels:
                    x = torch.cat([x, skips.pop()], dim=1)
                x = block(x, emb)
        return aux


def _decoder_level(dec: nn.ModuleDict, res: int, lowest: bool, cout: int, width: int, skips: list[int],
                   num_blocks: int, attention: Sequence[int], block: dict[str, Any]) -> int:
    """One decoder resolution of EDM's UNets: the two middle blocks (at the lowest resolution) or the
    upsampling block, then ``num_blocks + 1`` blocks that each take an encoder skip (those whose index is
    in ``attention`` with self-attention). Returns the channels out."""
    if lowest:
        dec[f"{res}x{res}_in0"] = UNetBlock(cout, cout, attention=True, **block)
        dec[f"{res}x{res}_in1"] = UNetBlock(cout, cout, **block)
    else:
        dec[f"{res}x{res}_up"] = UNetBlock(cout, cout, up=True, **block)
    for idx in range(num_blocks + 1):
        cin, cout = cout + skips.pop(), width
        dec[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=idx in attention, **block)
    return cout


@register("dhariwalunet")
class DhariwalUNet(nn.Module):
    """ADM as EDM builds it (``DhariwalUNet`` of NVlabs/edm); arguments as the official ones."""

    label_input = "one_hot"

    def __init__(self, img_resolution: int, in_channels: int, out_channels: int, label_dim: int = 0,
                 augment_dim: int = 0, model_channels: int = 192, channel_mult: Sequence[int] = (1, 2, 3, 4),
                 channel_mult_emb: int = 4, num_blocks: int = 3,
                 attn_resolutions: Sequence[int] = (32, 16, 8),
                 dropout: float = 0.10, label_dropout: float = 0.0):
        super().__init__()
        _set_io(self, img_resolution, in_channels, out_channels, label_dim, augment_dim, label_dropout)
        emb_channels = model_channels * channel_mult_emb
        init = dict(init_mode="kaiming_uniform", init_weight=math.sqrt(1 / 3), init_bias=math.sqrt(1 / 3))
        init_zero = dict(init_mode="kaiming_uniform", init_weight=0, init_bias=0)
        block = dict(emb_channels=emb_channels, channels_per_head=64, dropout=dropout, init=init,
                     init_zero=init_zero)

        self.map_noise = PositionalEmbedding(model_channels)
        self.map_augment = (Linear(augment_dim, model_channels, bias=False, **init_zero) if augment_dim
                            else None)
        self.map_layer0 = Linear(model_channels, emb_channels, **init)
        self.map_layer1 = Linear(emb_channels, emb_channels, **init)
        self.map_label = (Linear(label_dim, emb_channels, bias=False, init_mode="kaiming_normal",
                                 init_weight=math.sqrt(label_dim)) if label_dim else None)

        self.enc = nn.ModuleDict()
        cout = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_conv"] = Conv2d(cin, cout, 3, **init)
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(cout, cout, down=True, **block)
            for idx in range(num_blocks):
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=res in attn_resolutions,
                                                                **block)
        skips = [b.out_channels for b in self.enc.values()]

        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            attention = range(num_blocks + 1) if res in attn_resolutions else ()
            cout = _decoder_level(self.dec, res, level == len(channel_mult) - 1, cout, model_channels * mult,
                                  skips, num_blocks, attention, block)
        self.out_norm = GroupNorm(cout)
        self.out_conv = Conv2d(cout, out_channels, 3, **init_zero)

    def forward(self, x: torch.Tensor, noise_labels: torch.Tensor, class_labels: torch.Tensor | None = None,
                augment_labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.map_noise(_noise_batch(noise_labels, x.shape[0]))
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels.to(emb.dtype))
        emb = self.map_layer1(F.silu(self.map_layer0(emb)))
        if self.map_label is not None:
            emb = emb + self.map_label(_label_rows(self, class_labels, x))
        emb = F.silu(emb)
        skips = []
        for block in self.enc.values():
            x = block(x, emb) if isinstance(block, UNetBlock) else block(x)
            skips.append(x)
        for block in self.dec.values():
            if x.shape[1] != block.in_channels:
                x = torch.cat([x, skips.pop()], dim=1)
            x = block(x, emb)
        return self.out_conv(norm_silu(self.out_norm, x))
