"""GigaGAN networks (Kang et al., "Scaling up GANs for Text-to-Image Synthesis", CVPR 2023).

- :class:`GigaGANGenerator` (``gigagan-generator``): style mapping w = M(z, t_global); sample-adaptive
  kernel selection (Sec. 3.2, Eq. 2: a bank of N kernels mixed by softmax(affine(w)), then StyleGAN2
  modulation/demodulation); convolutions interleaved with L2-distance self-attention and
  cross-attention to t_local; noise inputs; an RGB output at every scale (the image pyramid).
- :class:`GigaGANDiscriminator` (``gigagan-discriminator``): multi-scale input, multi-scale output
  (Sec. 3.3): pyramid level i enters the shared trunk at its own resolution and is judged by a
  text-conditioned head at every coarser scale j.
- :class:`GigaGANUpsampler` (``gigagan-upsampler``): the asymmetric UNet super-resolution network
  (Sec. 3.5): a short encoder, a longer decoder of style-modulated adaptive convolutions, skips at
  matching resolutions, optional text conditioning.

Sizes are set by config, so the same code runs the CPU-scale defaults and paper-scale widths.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from genzoo.nets import register
from genzoo.nets.fused import token_major
from genzoo.nets.text import TextEmbedding, build_text_encoder
from genzoo.seeds import normal

ACT_GAIN = math.sqrt(2.0)
#: discriminator heads: the projection D on averaged features, or StyleGAN2-ADA's cmap epilogue
D_HEADS = ("projection", "cmap")
#: discriminator trunk: normalisation after each conv, pooling of the residual branch
D_NORMS = ("none", "batch")
D_POOLS = ("avg", "max")
#: discriminator conv initialisation: PyTorch's default, or He (variance-scaled normal, zero bias)
D_INITS = ("torch", "he")


def lrelu(x: torch.Tensor) -> torch.Tensor:
    """Leaky ReLU(0.2) with the variance-preserving gain sqrt(2) (StyleGAN)."""
    return F.leaky_relu(x, 0.2) * ACT_GAIN


def he_init_(module: nn.Module, negative_slope: float = 0.2) -> None:
    """He et al. 2015 (Eq. 10, leaky ReLU form): every Conv2d weight in ``module`` ~ N(0, 2 / ((1 + a^2)
    fan_in)), biases 0. PyTorch's default draws weights with a third of that variance (std 1 / sqrt(3
    fan_in)) and uniform biases, so activations shrink layer by layer (docs/gigagan.md: with it, D's trunk
    does not learn shape at 16 px)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, a=negative_slope, nonlinearity="leaky_relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def resolutions_between(low: int, high: int) -> list[int]:
    if low < 1 or high < low or high & (high - 1) or low & (low - 1):
        raise ValueError(f"resolutions must be powers of two with low <= high, got {low}, {high}")
    return [2**k for k in range(int(math.log2(low)), int(math.log2(high)) + 1)]


def channels_at(res: int, channel_base: int, channel_max: int) -> int:
    """Channels halve as resolution doubles, capped at channel_max (StyleGAN's channel_base / res)."""
    return max(8, min(channel_max, channel_base // res))


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate (weights N(0,1), scaled at run time)."""

    def __init__(self, in_features: int, out_features: int, bias_init: float = 0.0, lr_mul: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)) / lr_mul)
        self.scale = lr_mul / math.sqrt(in_features)
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


def mix_kernels(bank: torch.Tensor, selection: torch.Tensor) -> torch.Tensor:
    """Sample-adaptive kernel selection (GigaGAN Eq. 2): K_b = sum_i s_bi * K_i.

    ``bank`` [N, O, I, k, k], ``selection`` [B, N] (softmax weights) -> per-sample kernels [B, O, I, k, k].
    """
    return torch.einsum("bn,noikl->boikl", selection, bank)


def modulate(
    weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """StyleGAN2 weight modulation and demodulation (Karras et al. 2020, Eqs. 1-3).

    ``weight`` [B, O, I, k, k], ``styles`` [B, I]: w' = w * s_in, then
    w'' = w' / sqrt(sum_{in,k,k} w'^2 + eps),
    which returns unit-variance inputs to unit-variance outputs.
    """
    weight = weight * styles[:, None, :, None, None]
    if demodulate:
        weight = weight * torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4), keepdim=True) + eps)
    return weight


def grouped_conv(x: torch.Tensor, weight: torch.Tensor, padding: int) -> torch.Tensor:
    """Convolve each sample with its own kernel: x [B, I, H, W], weight [B, O, I, k, k]."""
    b, i, h, w = x.shape
    out = F.conv2d(
        x.reshape(1, b * i, h, w), weight.reshape(-1, *weight.shape[2:]), padding=padding, groups=b
    )
    return out.reshape(b, -1, *out.shape[2:])


class AdaptiveConv2d(nn.Module):
    """A convolution whose kernel is selected from a bank by w, then modulated/demodulated by w."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        kernel_size: int = 3,
        num_kernels: int = 4,
        demodulate: bool = True,
    ):
        super().__init__()
        self.bank = nn.Parameter(
            torch.randn(num_kernels, out_channels, in_channels, kernel_size, kernel_size)
        )
        self.scale = 1 / math.sqrt(in_channels * kernel_size**2)
        self.select = EqualLinear(w_dim, num_kernels) if num_kernels > 1 else None
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.demodulate = demodulate
        self.padding = kernel_size // 2

    def kernels(self, w: torch.Tensor) -> torch.Tensor:
        bank = self.bank * self.scale
        if self.select is None:
            return bank.expand(w.shape[0], *bank.shape[1:])
        return mix_kernels(bank, self.select(w).softmax(-1))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        weight = modulate(self.kernels(w), self.affine(w), self.demodulate)
        return grouped_conv(x, weight.to(x.dtype), self.padding)


class NoiseInput(nn.Module):
    """Per-pixel noise times a learned strength (init 0); noise drawn per seed when an rng is given."""

    def __init__(self):
        super().__init__()
        self.strength = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, rng: Any = None) -> torch.Tensor:
        shape = (x.shape[0], 1, x.shape[2], x.shape[3])
        # Drawn in float32 whatever the compute precision, so a seed's noise is the same under autocast.
        noise = normal(rng, shape, x.device)
        return x + noise.to(x.device, x.dtype) * self.strength


class SynthesisLayer(nn.Module):
    """Adaptive conv -> noise -> bias -> leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, num_kernels: int):
        super().__init__()
        self.conv = AdaptiveConv2d(in_channels, out_channels, w_dim, 3, num_kernels)
        self.noise = NoiseInput()
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor, rng: Any = None) -> torch.Tensor:
        x = self.noise(self.conv(x, w), rng)
        return lrelu(x + self.bias[None, :, None, None].to(x.dtype))


class ToRGB(nn.Module):
    """Modulated 1x1 convolution without demodulation (StyleGAN2's tRGB)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int):
        super().__init__()
        self.conv = AdaptiveConv2d(
            in_channels, out_channels, w_dim, kernel_size=1, num_kernels=1, demodulate=False
        )
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.conv(x, w) + self.bias[None, :, None, None].to(x.dtype)


def _heads_for(channels: int, head_dim: int) -> int:
    return max(1, channels // head_dim)


class L2SelfAttention(nn.Module):
    """Self-attention with L2-distance logits and tied query/key weights (Kim et al. 2021; GigaGAN Sec. 3.2).

    logits_ij = -||q_i - k_j||^2 / sqrt(d). The -||q_i||^2 term is constant along j and cancels in the
    softmax, so this is scaled_dot_product_attention with scale 2/sqrt(d) and an additive -||k_j||^2/sqrt(d).
    The residual gain starts at 0, so a new block starts as the identity.
    """

    def __init__(self, channels: int, head_dim: int = 32):
        super().__init__()
        self.heads = _heads_for(channels, head_dim)
        self.norm = nn.GroupNorm(min(32, channels), channels)
        self.qk = nn.Conv2d(channels, channels, 1, bias=False)  # tied: queries and keys share weights
        self.v = nn.Conv2d(channels, channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        self.gain = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        qk = token_major(self.qk(y).reshape(b, self.heads, c // self.heads, h * w))
        v = token_major(self.v(y).reshape(b, self.heads, c // self.heads, h * w))
        d = qk.shape[-1]
        bias = (-qk.pow(2).sum(-1) / math.sqrt(d))[:, :, None, :]
        out = F.scaled_dot_product_attention(qk, qk, v, attn_mask=bias.to(qk.dtype), scale=2 / math.sqrt(d))
        out = out.transpose(2, 3).reshape(b, c, h, w)
        return x + self.gain * self.out(out)


class CrossAttention(nn.Module):
    """Image features attend to the prompt's local tokens t_local (GigaGAN Sec. 3.2)."""

    def __init__(self, channels: int, text_dim: int, head_dim: int = 32):
        super().__init__()
        self.heads = _heads_for(channels, head_dim)
        self.norm = nn.GroupNorm(min(32, channels), channels)
        self.q = nn.Conv2d(channels, channels, 1, bias=False)
        self.kv = nn.Linear(text_dim, 2 * channels)
        self.out = nn.Conv2d(channels, channels, 1)
        self.gain = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, text: TextEmbedding) -> torch.Tensor:
        b, c, h, w = x.shape
        q = token_major(self.q(self.norm(x)).reshape(b, self.heads, c // self.heads, h * w))
        k, v = self.kv(text.local.to(x.dtype)).chunk(2, dim=-1)
        k = k.reshape(b, -1, self.heads, c // self.heads).transpose(1, 2)
        v = v.reshape(b, -1, self.heads, c // self.heads).transpose(1, 2)
        mask = text.mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = out.transpose(2, 3).reshape(b, c, h, w)
        return x + self.gain * self.out(out)


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """x / sqrt(mean(x^2)) per row (StyleGAN's normalisation of z and of the embedded condition)."""
    return x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + eps)


class MappingNetwork(nn.Module):
    """w = M(z, t_global): normalised z concatenated with a normalised projection of t_global, through an
    MLP (StyleGAN2-ADA's conditional mapping, the class embedding replaced by t_global). ``z_dim`` 0:
    the condition alone (StyleGAN2-ADA's discriminator maps its condition this way into cmap)."""

    def __init__(self, z_dim: int, w_dim: int, text_dim: int, layers: int = 4, lr_mul: float = 0.01):
        super().__init__()
        self.z_dim = z_dim
        self.text_proj = EqualLinear(text_dim, w_dim) if text_dim > 0 else None
        dims = [z_dim + (w_dim if text_dim > 0 else 0)] + [w_dim] * layers
        self.layers = nn.ModuleList(EqualLinear(a, b, lr_mul=lr_mul) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, z: torch.Tensor | None, t_global: torch.Tensor | None = None) -> torch.Tensor:
        parts = [normalize_2nd_moment(z)] if self.z_dim > 0 else []
        if self.text_proj is not None:
            if t_global is None:
                raise ValueError("this mapping network is text-conditioned: give t_global")
            t = t_global.to(z.dtype if self.z_dim > 0 else t_global.dtype)
            parts.append(normalize_2nd_moment(self.text_proj(t)))
        x = torch.cat(parts, 1)
        for layer in self.layers:
            x = lrelu(layer(x))
        return x


def _text_or_list(text: TextEmbedding | Sequence[TextEmbedding | None] | None, n: int) -> list:
    """One text embedding per block: the same one for all, or a per-block list (prompt mixing)."""
    if text is None or isinstance(text, TextEmbedding):
        return [text] * n
    text = list(text)
    if len(text) != n:
        raise ValueError(f"expected {n} per-block text embeddings, got {len(text)}")
    return text


class SynthesisBlock(nn.Module):
    """One resolution: [upsample] conv, [self-attention, cross-attention], conv, then tRGB."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        num_kernels: int,
        img_channels: int,
        first: bool,
        attention: bool,
        text_dim: int,
        head_dim: int,
    ):
        super().__init__()
        self.first = first
        self.conv0 = None if first else SynthesisLayer(in_channels, out_channels, w_dim, num_kernels)
        self.self_attn = L2SelfAttention(out_channels, head_dim) if attention else None
        self.cross_attn = (
            CrossAttention(out_channels, text_dim, head_dim) if attention and text_dim > 0 else None
        )
        self.conv1 = SynthesisLayer(
            out_channels if not first else in_channels, out_channels, w_dim, num_kernels
        )
        self.torgb = ToRGB(out_channels, img_channels, w_dim)
        self.num_ws = 1 if first else 2

    def forward(
        self, x: torch.Tensor, ws: torch.Tensor, text: TextEmbedding | None, rng: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.conv0 is not None:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = self.conv0(x, ws[:, 0], rng)
        if self.self_attn is not None:
            x = self.self_attn(x)
        if self.cross_attn is not None and text is not None:
            x = self.cross_attn(x, text)
        x = self.conv1(x, ws[:, -1], rng)
        return x, self.torgb(x, ws[:, -1])


@register("gigagan-generator")
class GigaGANGenerator(nn.Module):
    """Text-to-image GigaGAN generator returning an image pyramid.

    ``G(z, prompts=[...])`` -> the full-resolution image; ``return_pyramid=True`` -> {res: image} for
    ``pyramid`` resolutions. Each pyramid level is the running sum of upsampled tRGB outputs, so
    every level is a complete image at its scale. ``default_prompts`` (e.g. training captions) are
    kept for sampling without a prompt.
    """

    def __init__(
        self,
        resolution: int = 32,
        img_channels: int = 3,
        z_dim: int = 64,
        w_dim: int = 128,
        mapping_layers: int = 2,
        channel_base: int = 2048,
        channel_max: int = 128,
        num_kernels: int = 4,
        attn_res: Sequence[int] = (8, 16),
        pyramid: Sequence[int] | None = None,
        head_dim: int = 32,
        text: dict[str, Any] | None = None,
        default_prompts: Sequence[str] | None = None,
    ):
        super().__init__()
        self.default_prompts = [str(p) for p in (default_prompts or [])]
        self.resolution, self.img_channels, self.z_dim, self.w_dim = resolution, img_channels, z_dim, w_dim
        self.in_channels = self.out_channels = img_channels
        self.label_dim = 0  # conditioned on text, not class labels
        self.block_res = resolutions_between(4, resolution)
        self.pyramid = sorted(
            int(r) for r in (pyramid or [r for r in self.block_res if r >= 8] or [resolution])
        )
        if not set(self.pyramid) <= set(self.block_res) or self.pyramid[-1] != resolution:
            raise ValueError(
                f"pyramid {self.pyramid} must be block resolutions {self.block_res} ending at {resolution}"
            )
        self.text = build_text_encoder(**text) if text is not None else None
        text_dim = self.text.dim if self.text is not None else 0
        self.mapping = MappingNetwork(z_dim, w_dim, text_dim, mapping_layers)
        ch = {r: channels_at(r, channel_base, channel_max) for r in self.block_res}
        self.const = nn.Parameter(torch.randn(ch[4], 4, 4))
        self.blocks = nn.ModuleList(
            SynthesisBlock(
                ch[r // 2] if r > 4 else ch[4],
                ch[r],
                w_dim,
                num_kernels,
                img_channels,
                first=r == 4,
                attention=r in set(attn_res),
                text_dim=text_dim,
                head_dim=head_dim,
            )
            for r in self.block_res
        )
        self.num_ws = sum(b.num_ws for b in self.blocks)

    # -- the three stages, public so controls can act between them ---------------------------------
    def encode_text(self, prompts: Sequence[str]) -> TextEmbedding | None:
        return self.text(prompts) if self.text is not None else None

    def map(self, z: torch.Tensor, text: TextEmbedding | None, truncation: float = 1.0) -> torch.Tensor:
        """w [N, w_dim]; truncation pulls w toward the prompt's mean style (w-space truncation)."""
        w = self.mapping(z, text.global_ if text is not None else None)
        if truncation != 1.0:
            w = torch.lerp(self.mean_w(text, len(z), z.device), w, truncation)
        return w

    @torch.no_grad()
    def mean_w(
        self, text: TextEmbedding | None, n: int, device: torch.device, samples: int = 256
    ) -> torch.Tensor:
        """The conditional centre of w-space: mean of M(z, t) over fixed z (the same z for every call)."""
        zs = torch.randn(samples, self.z_dim, generator=torch.Generator().manual_seed(0)).to(device)
        if text is None:
            return self.mapping(zs, None).mean(0, keepdim=True).expand(n, -1)
        rows = [self.mapping(zs, text.global_[i : i + 1].expand(samples, -1)).mean(0) for i in range(n)]
        return torch.stack(rows)

    def synthesis(
        self, ws: torch.Tensor, text: TextEmbedding | Sequence[TextEmbedding] | None = None, rng: Any = None
    ) -> dict[int, torch.Tensor]:
        """ws [N, num_ws, w_dim] (one style per conv layer) -> {res: image} for the pyramid."""
        if ws.ndim == 2:
            ws = ws[:, None].expand(-1, self.num_ws, -1)
        if ws.shape[1] != self.num_ws:
            raise ValueError(f"expected {self.num_ws} styles per sample, got {ws.shape[1]}")
        texts = _text_or_list(text, len(self.blocks))
        x = self.const[None].expand(ws.shape[0], -1, -1, -1)
        img, out, index = None, {}, 0
        for block, res, block_text in zip(self.blocks, self.block_res, texts):
            x, rgb = block(x, ws[:, index : index + block.num_ws], block_text, rng)
            index += block.num_ws
            img = (
                rgb
                if img is None
                else F.interpolate(img, scale_factor=2, mode="bilinear", align_corners=False) + rgb
            )
            if res in self.pyramid:
                out[res] = img
        return out

    def forward(
        self,
        z: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        prompts: Sequence[str] | None = None,
        text: TextEmbedding | None = None,
        truncation: float = 1.0,
        rng: Any = None,
        return_pyramid: bool = False,
    ) -> torch.Tensor | dict[int, torch.Tensor]:
        if text is None and self.text is not None:
            if prompts is None:
                raise ValueError("this generator is text-conditioned: give prompts=[...] or text=")
            if len(prompts) != len(z):
                raise ValueError(f"{len(prompts)} prompts for {len(z)} latents")
            text = self.encode_text(prompts)
        w = self.map(z, text, truncation)
        pyramid = self.synthesis(w, text, rng)
        return pyramid if return_pyramid else pyramid[self.resolution]


class DiscriminatorStage(nn.Module):
    """Residual down block: two 3x3 convs (+ optional L2 self-attention), 2x pooling.

    ``norm`` "batch" puts BatchNorm after each conv; ``pool`` "max" max-pools the residual branch (the
    skip is always average-pooled). Measured on shapes at 16 px (docs/gigagan.md): trained as a
    supervised shape classifier, the trunk of these stages is at chance after 32k images with PyTorch's
    init (with or without BatchNorm); He-initialised (:func:`he_init_`) with max-pooling it reaches
    0.87-0.90 at 12.8k -- either alone does not.
    """

    def __init__(self, in_channels: int, out_channels: int, attention: bool, head_dim: int,
                 norm: str = "none", pool: str = "avg"):
        super().__init__()
        self.conv0 = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.attn = L2SelfAttention(in_channels, head_dim) if attention else None
        batch = norm == "batch"
        self.norm0 = nn.BatchNorm2d(in_channels) if batch else nn.Identity()
        self.norm1 = nn.BatchNorm2d(out_channels) if batch else nn.Identity()
        self.pool = F.max_pool2d if pool == "max" else F.avg_pool2d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.attn is not None:
            x = self.attn(x)
        y = self.norm1(self.conv1(lrelu(self.norm0(self.conv0(lrelu(x))))))
        return (self.pool(y, 2) + F.avg_pool2d(self.skip(x), 2)) / math.sqrt(2)


class ProjectionHead(nn.Module):
    """Text-conditioned prediction at one scale: linear(f) + <proj(t_global), f> (projection D) on
    globally averaged features f (``--d-head projection``)."""

    def __init__(self, channels: int, text_dim: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.linear = nn.Linear(channels, 1)
        self.proj = nn.Linear(text_dim, channels) if text_dim > 0 else None

    def forward(self, x: torch.Tensor, t_global: torch.Tensor | None) -> torch.Tensor:
        f = lrelu(self.conv(x)).mean((2, 3))
        out = self.linear(f)[:, 0]
        if self.proj is not None:
            out = out + (self.proj(t_global.to(f.dtype)) * f).sum(1) / math.sqrt(f.shape[1])
        return out


def minibatch_stddev(x: torch.Tensor, group_size: int = 4) -> torch.Tensor:
    """StyleGAN's minibatch standard deviation: one extra channel holding, for each group of samples,
    the mean over features of their standard deviation across the group. Sample i is in group
    i mod ceil(N / group_size) (StyleGAN's grouping when N divides; otherwise the groups differ in size
    by at most one, so a batch of any size -- such as the matching-aware negatives -- gets the same
    statistic as a full one, instead of a telltale zero)."""
    n = x.shape[0]
    groups = -(-n // max(1, min(group_size, n)))
    gid = torch.arange(n, device=x.device) % groups
    y = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    count = torch.bincount(gid, minlength=groups).to(y.dtype).view(-1, 1, 1, 1)
    mean = torch.zeros(groups, *y.shape[1:], device=y.device, dtype=y.dtype).index_add(0, gid, y) / count
    var = torch.zeros_like(mean).index_add(0, gid, (y - mean[gid]).pow(2)) / count
    std = var.add(1e-8).sqrt().mean((1, 2, 3))[gid]
    return torch.cat([x, std.view(n, 1, 1, 1).expand(n, 1, *x.shape[2:]).to(x.dtype)], 1)


class CmapHead(nn.Module):
    """StyleGAN2-ADA's conditional epilogue at one scale (``--d-head cmap``): minibatch stddev, 3x3 conv,
    a fully connected layer over the flattened r x r map (so where things are counts, not only which
    features occur), a linear map to ``cmap_dim``, and the output <h, cmap> / sqrt(cmap_dim) with cmap
    the mapped condition: purely a projection, no unconditional term."""

    def __init__(self, channels: int, resolution: int, cmap_dim: int, mbstd_group: int = 4):
        super().__init__()
        self.mbstd_group = mbstd_group
        self.conv = nn.Conv2d(channels + (1 if mbstd_group > 1 else 0), channels, 3, padding=1)
        self.fc = nn.Linear(channels * resolution * resolution, channels)
        self.out = nn.Linear(channels, cmap_dim)

    def forward(self, x: torch.Tensor, cmap: torch.Tensor) -> torch.Tensor:
        if self.mbstd_group > 1:
            x = minibatch_stddev(x, self.mbstd_group)
        h = self.out(lrelu(self.fc(lrelu(self.conv(x)).flatten(1))))
        return (h * cmap.to(h.dtype)).sum(1) / math.sqrt(h.shape[1])


def image_pyramid(images: torch.Tensor, resolutions: Sequence[int]) -> dict[int, torch.Tensor]:
    """Area-downsampled copies of ``images`` at each resolution (real images for the multi-scale D)."""
    return {
        int(r): images if r == images.shape[-1] else F.adaptive_avg_pool2d(images, int(r))
        for r in resolutions
    }


@register("gigagan-discriminator")
class GigaGANDiscriminator(nn.Module):
    """Multi-scale input, multi-scale output, text-conditioned discriminator (GigaGAN Sec. 3.3).

    ``head``: "projection" (each scale: linear(f) + <proj(t_global), f> on averaged features) or "cmap"
    (StyleGAN2-ADA's epilogue at each scale, projected onto cmap = M(t_global), :class:`CmapHead`).

    ``D(pyramid, text)`` -> {(r_in, r_out): logits [N]}: input level r_in enters the shared trunk
    at its resolution via its own fromRGB and is judged at every output scale r_out < r_in.
    ``cond_channels`` extra input channels (the upsampler's low-res image) are concatenated at
    every level. ``init`` "he": He-initialise the convs of fromRGB, trunk and heads (:func:`he_init_`);
    with ``pool`` "max" the trunk then learns shape at 16 px (docs/gigagan.md, session 9).
    """

    def __init__(
        self,
        resolution: int = 32,
        img_channels: int = 3,
        channel_base: int = 2048,
        channel_max: int = 128,
        pyramid: Sequence[int] | None = None,
        out_res: Sequence[int] | None = None,
        attn_res: Sequence[int] = (8,),
        head_dim: int = 32,
        text: dict[str, Any] | None = None,
        cond_channels: int = 0,
        head: str = "projection",
        cmap_dim: int | None = None,
        mapping_layers: int = 2,
        mbstd_group: int = 4,
        norm: str = "none",
        pool: str = "avg",
        init: str = "torch",
    ):
        super().__init__()
        if norm not in D_NORMS or pool not in D_POOLS:
            raise ValueError(f"D norm / pool: expected one of {D_NORMS} / {D_POOLS}, got {norm} / {pool}")
        if init not in D_INITS:
            raise ValueError(f"D init: expected one of {', '.join(D_INITS)}, got {init!r}")
        if head not in D_HEADS:
            raise ValueError(f"discriminator head: expected one of {', '.join(D_HEADS)}, got {head!r}")
        self.resolution, self.head = resolution, head
        self.trunk_res = resolutions_between(4, resolution)
        self.pyramid = sorted(int(r) for r in (pyramid or [r for r in self.trunk_res if r >= 8]))
        self.out_res = sorted(int(r) for r in (out_res or [r for r in self.trunk_res if r < resolution]))
        if not set(self.pyramid) <= set(self.trunk_res) or min(self.pyramid) <= min(self.out_res):
            raise ValueError(
                f"pyramid {self.pyramid} must lie in {self.trunk_res} above the lowest output scale"
            )
        self.text = build_text_encoder(**text) if text is not None else None
        text_dim = self.text.dim if self.text is not None else 0
        ch = {r: channels_at(r, channel_base, channel_max) for r in self.trunk_res}
        self.cond_channels = cond_channels
        self.from_rgb = nn.ModuleDict(
            {str(r): nn.Conv2d(img_channels + cond_channels, ch[r], 1) for r in self.pyramid}
        )
        self.stages = nn.ModuleDict(
            {
                str(r): DiscriminatorStage(ch[r], ch[r // 2], r in set(attn_res), head_dim, norm, pool)
                for r in self.trunk_res
                if r > 4
            }
        )
        self.cmap = None
        if head == "cmap":
            if text_dim == 0:
                raise ValueError("the cmap discriminator head projects onto the mapped text: give text=")
            cmap_dim = int(cmap_dim or ch[min(self.out_res)])
            self.cmap = MappingNetwork(0, cmap_dim, text_dim, mapping_layers)
            self.heads = nn.ModuleDict(
                {str(r): CmapHead(ch[r], r, cmap_dim, mbstd_group) for r in self.out_res}
            )
        else:
            self.heads = nn.ModuleDict({str(r): ProjectionHead(ch[r], text_dim) for r in self.out_res})
        if init == "he":
            for part in (self.from_rgb, self.stages, self.heads):
                he_init_(part)

    def output_keys(self) -> list[tuple[int, int]]:
        return [(i, j) for i in self.pyramid for j in self.out_res if j < i]

    def encode_text(self, prompts: Sequence[str]) -> TextEmbedding | None:
        return self.text(prompts) if self.text is not None else None

    def forward(
        self,
        images: torch.Tensor | dict[int, torch.Tensor],
        text: TextEmbedding | None = None,
        prompts: Sequence[str] | None = None,
        cond: torch.Tensor | None = None,
    ) -> dict[tuple[int, int], torch.Tensor]:
        if isinstance(images, torch.Tensor):
            images = image_pyramid(images, self.pyramid)
        if text is None and self.text is not None:
            if prompts is None:
                raise ValueError("this discriminator is text-conditioned: give prompts=[...] or text=")
            text = self.encode_text(prompts)
        t_global = text.global_ if text is not None else None
        if self.cmap is not None:
            t_global = self.cmap(None, t_global)  # every head projects onto the one mapped condition
        out = {}
        for r_in in self.pyramid:
            x = images[r_in]
            if self.cond_channels:
                x = torch.cat(
                    [x, F.interpolate(cond, size=x.shape[-2:], mode="bilinear", align_corners=False)], 1
                )
            h = self.from_rgb[str(r_in)](x)
            res = r_in
            while res > min(self.out_res):
                h = self.stages[str(res)](h)
                res //= 2
                if str(res) in self.heads:
                    out[(r_in, res)] = self.heads[str(res)](h, t_global)
        return out


class EncoderStage(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.conv1 = nn.Conv2d(out_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lrelu(self.conv1(lrelu(self.conv0(x))))


#: the upsampler's fixed base path (``--upsampler-base``), which the network adds a residual to
UPSAMPLER_BASES = ("bicubic", "bilinear")
#: the upsampler's latent in training and sampling (``--upsampler-latent``): z = 0 or z ~ N(0, I)
UPSAMPLER_LATENTS = ("zero", "random")


@register("gigagan-upsampler")
class GigaGANUpsampler(nn.Module):
    """Asymmetric UNet super-resolution network (GigaGAN Sec. 3.5).

    Encoder: ``down`` stride-2 stages from the input. Decoder: up-blocks of style-modulated adaptive
    convolutions (w = M(z, t_global), or M(z) unconditionally) back to the input size and ``scale``x
    beyond it, with encoder skips at matching resolutions, L2 self-attention and cross-attention at
    the coarse levels. The network predicts a residual over a fixed upsampling of the input, ``base``
    (``UPSAMPLER_BASES``: bicubic or bilinear; a run saved before the option existed is bilinear). The tRGB
    kernel starts at zero, so an untrained upsampler is exactly its base path and training adds detail
    (with a random tRGB the residual starts as noise of std ~0.3, the L1 term first learns to switch it
    off, and it stayed ~0 after thousands of images: docs/gigagan.md). ``latent`` (``UPSAMPLER_LATENTS``):
    ``random`` trains with z ~ N(0, I) (style-based, as the generator), ``zero`` with z = 0 (a deterministic
    mapping: with random z and no caption, the per-sample styles carry nothing about the target and the
    L1 term kept the residual at ~3e-4 over 4,800 images; docs/gigagan.md).
    Fully convolutional: any input whose sides divide by 2**down.
    """

    def __init__(
        self,
        img_channels: int = 3,
        scale: int = 4,
        down: int = 2,
        channels: int = 64,
        z_dim: int = 32,
        w_dim: int = 64,
        mapping_layers: int = 2,
        num_kernels: int = 4,
        attention_levels: int = 1,
        head_dim: int = 32,
        text: dict[str, Any] | None = None,
        in_resolution: int = 16,
        base: str = "bilinear",
        latent: str = "random",
    ):
        super().__init__()
        if scale < 2 or scale & (scale - 1):
            raise ValueError(f"upsampler scale must be a power of two >= 2, got {scale}")
        if base not in UPSAMPLER_BASES:
            raise ValueError(f"upsampler base must be one of {', '.join(UPSAMPLER_BASES)}, got {base!r}")
        if latent not in UPSAMPLER_LATENTS:
            raise ValueError(f"upsampler latent must be one of {', '.join(UPSAMPLER_LATENTS)}, "
                             f"got {latent!r}")
        self.base, self.latent = base, latent
        self.img_channels, self.scale, self.down, self.z_dim = img_channels, scale, down, z_dim
        self.in_channels = self.out_channels = img_channels
        self.in_resolution, self.resolution = in_resolution, in_resolution * scale
        self.text = build_text_encoder(**text) if text is not None else None
        text_dim = self.text.dim if self.text is not None else 0
        self.mapping = MappingNetwork(z_dim, w_dim, text_dim, mapping_layers)
        self.from_rgb = nn.Conv2d(img_channels, channels, 3, padding=1)
        self.encoder = nn.ModuleList(EncoderStage(channels, channels) for _ in range(down))
        for conv in [self.from_rgb, *(m for m in self.encoder.modules() if isinstance(m, nn.Conv2d))]:
            # variance-preserving with lrelu's sqrt(2) gain (std 1/sqrt(fan_in), as StyleGAN's equalised
            # layers): with PyTorch's default init the features shrink ~0.6x per conv, the demodulated
            # decoder keeps that scale, and the residual stayed ~1e-3 after 4k images (docs/gigagan.md)
            nn.init.normal_(conv.weight, 0.0, 1 / math.sqrt(conv.weight[0].numel()))
            nn.init.zeros_(conv.bias)
        self.bottleneck = SynthesisLayer(channels, channels, w_dim, num_kernels)
        ups = down + int(math.log2(scale))
        self.up_layers = nn.ModuleList()
        self.attn = nn.ModuleList()
        for level in range(ups):
            skip = channels if level < down else 0
            coarse = level < attention_levels
            self.up_layers.append(
                nn.ModuleList(
                    [
                        SynthesisLayer(channels + skip, channels, w_dim, num_kernels),
                        SynthesisLayer(channels, channels, w_dim, num_kernels),
                    ]
                )
            )
            self.attn.append(
                nn.ModuleList(
                    [
                        L2SelfAttention(channels, head_dim) if coarse else nn.Identity(),
                        CrossAttention(channels, text_dim, head_dim)
                        if coarse and text_dim
                        else nn.Identity(),
                    ]
                )
            )
        self.torgb = ToRGB(channels, img_channels, w_dim)
        nn.init.zeros_(self.torgb.conv.bank)

    def base_path(self, low_res: torch.Tensor) -> torch.Tensor:
        """The fixed upsampling the network adds its residual to."""
        return F.interpolate(low_res, scale_factor=self.scale, mode=self.base, align_corners=False)

    def encode_text(self, prompts: Sequence[str]) -> TextEmbedding | None:
        return self.text(prompts) if self.text is not None else None

    def forward(
        self,
        low_res: torch.Tensor,
        z: torch.Tensor | None = None,
        prompts: Sequence[str] | None = None,
        text: TextEmbedding | None = None,
        rng: Any = None,
    ) -> torch.Tensor:
        """low_res [N, C, h, w] in [-1, 1] -> [N, C, h*scale, w*scale]; z defaults to zeros."""
        n, _, h, w_ = low_res.shape
        if h % (2**self.down) or w_ % (2**self.down):
            raise ValueError(f"upsampler input sides must divide by {2**self.down}, got {h}x{w_}")
        if z is None:
            z = low_res.new_zeros(n, self.z_dim)
        if text is None and self.text is not None:
            if prompts is None:
                raise ValueError("this upsampler is text-conditioned: give prompts=[...] or text=")
            text = self.encode_text(prompts)
        w = self.mapping(z, text.global_ if text is not None else None)
        x = self.from_rgb(low_res)
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
            x = F.avg_pool2d(x, 2)
        x = self.bottleneck(x, w, rng)
        for level, (convs, (sa, ca)) in enumerate(zip(self.up_layers, self.attn)):
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            if level < self.down:
                x = torch.cat([x, skips[self.down - 1 - level]], 1)
            x = convs[0](x, w, rng)
            x = sa(x)
            if isinstance(ca, CrossAttention) and text is not None:
                x = ca(x, text)
            x = convs[1](x, w, rng)
        return self.base_path(low_res) + self.torgb(x, w)
