"""R3GAN's normalisation-free ResNet generator and discriminator (Huang et al. 2025, §4 "a roadmap to
a new baseline", config E).

Each stage works at one resolution and holds residual blocks of the inverted-bottleneck kind: a 1×1
convolution expands the channels, a grouped k×k convolution mixes space, a 1×1 convolution projects
back, with a biased leaky ReLU after the first two. Nothing is normalised; instead the blocks start as
the identity (fix-up style): the last convolution of every residual branch is zero and the others are
variance-scaled by L^(−1/(2m−2)), L the number of blocks and m = 3 the convolutions per branch.
Resampling is bilinear (the [1, 3, 3, 1] low-pass filter, :func:`genzoo.nets.edm2.resample`) with 1×1
convolutions where the width changes. G starts from a learned 4×4 basis modulated by a linear map of
[z, e(y)]; D ends in a depthwise 4×4 "basis" and a linear layer, projected onto an embedding of y.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from genzoo.errors import UserError
from genzoo.nets import register
from genzoo.nets.edm2 import resample

#: gain of leaky ReLU(0.2) (He et al. 2015): √(2 / (1 + 0.2²))
LRELU_GAIN = math.sqrt(2 / (1 + 0.2**2))
#: R3GAN's resampling filter [1, 2, 1] convolved with the box [1, 1]: bilinear interpolation
BILINEAR = (1, 3, 3, 1)
#: convolutions per residual branch (m in the variance-scaling exponent)
BRANCH_LAYERS = 3


def msr_init_(weight: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """He (MSR) initialisation N(0, gain²/fan_in), fan_in = in-channels per group × kernel area."""
    fan_in = weight[0].numel()
    with torch.no_grad():
        return weight.normal_(0.0, gain / math.sqrt(fan_in)) if gain else weight.zero_()


class Conv(nn.Conv2d):
    """Bias-free 'same' convolution with MSR initialisation at ``gain``."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 1, groups: int = 1,
                 gain: float = 1.0, padding: int | None = None):
        padding = (kernel - 1) // 2 if padding is None else padding
        super().__init__(in_channels, out_channels, kernel, padding=padding, groups=groups, bias=False)
        msr_init_(self.weight, gain)


class BiasedLReLU(nn.Module):
    """x + b (per channel, zero at start), then leaky ReLU with slope 0.2."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x + self.bias.to(x.dtype).view(1, -1, 1, 1), 0.2)


class ResidualBlock(nn.Module):
    """x + conv1×1(act(grouped conv k×k(act(conv1×1(x))))) with channels × ``expansion`` inside."""

    def __init__(self, channels: int, expansion: int, group_channels: int, kernel: int, total_blocks: int):
        super().__init__()
        inner = channels * expansion
        if inner % group_channels:
            raise UserError(f"r3gan: {inner} expanded channels do not split into groups of {group_channels}")
        # fix-up style variance scaling: L^(−1/(2m−2)) per layer of the branch (R3GAN §4, config E)
        gain = LRELU_GAIN * total_blocks ** (-1 / (2 * BRANCH_LAYERS - 2))
        self.expand = Conv(channels, inner, 1, gain=gain)
        self.act1 = BiasedLReLU(inner)
        self.spatial = Conv(inner, inner, kernel, groups=inner // group_channels, gain=gain)
        self.act2 = BiasedLReLU(inner)
        self.project = Conv(inner, channels, 1, gain=0.0)  # zero: the block starts as the identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(self.act2(self.spatial(self.act1(self.expand(x)))))


def _stage_widths(resolution: int, ch: int | Sequence[int]) -> list[int]:
    """Widths of the stages at 4, 8, …, resolution px (one width for all, or one per stage)."""
    if resolution < 4 or resolution & (resolution - 1):
        raise UserError(f"r3gan: the resolution must be a power of two ≥ 4, got {resolution}")
    stages = int(math.log2(resolution)) - 1
    widths = [int(ch)] * stages if isinstance(ch, int) else [int(c) for c in ch]
    if len(widths) != stages:
        raise UserError(f"r3gan: {stages} stage widths needed for {resolution} px, got {widths}")
    return widths


class _Net(nn.Module):
    def _blocks(self, widths: Sequence[int], blocks: int, expansion: int, group_channels: int,
                kernel: int) -> list[nn.ModuleList]:
        total = blocks * len(widths)
        return [nn.ModuleList(ResidualBlock(w, expansion, group_channels, kernel, total)
                              for _ in range(blocks)) for w in widths]


def class_embedding(num_classes: int, dim: int, gain: float = 1.0) -> torch.Tensor:
    """[classes, dim]: a bias-free linear layer on one-hot vectors, MSR-initialised (fan_in = classes)."""
    return torch.randn(num_classes, dim) * (gain / math.sqrt(num_classes))


def _class_rows(embed: nn.Parameter, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Rows of a class embedding [classes, dim] for int labels [N] or soft class vectors [N, classes]
    (R3GAN embeds a one-hot vector with a bias-free linear layer, which is the same map)."""
    if labels.ndim == 2:
        if labels.shape[1] != num_classes:
            raise UserError(f"class vectors: expected [N, {num_classes}], got {tuple(labels.shape)}")
        return labels.to(embed.dtype) @ embed
    return embed[labels.long()]


@register("r3gan")
class R3GANGenerator(_Net):
    """G(z, y): [z, e(y)] → learned 4×4 basis × linear(·) → stages of residual blocks, upsampling ×2
    between stages → 1×1 convolution to ``channels`` (no output non-linearity; samples are clamped)."""

    truncation_style = "resample"

    def __init__(self, resolution: int = 32, channels: int = 3, ch: int | Sequence[int] = 64, z_dim: int = 64,
                 num_classes: int = 0, embed_dim: int | None = None, blocks: int = 2, expansion: int = 2,
                 group_channels: int = 16, kernel: int = 3):
        super().__init__()
        widths = _stage_widths(resolution, ch)
        self.resolution, self.channels, self.z_dim = resolution, channels, z_dim
        self.num_classes = num_classes
        # conditional: e(y) has the size of z (R3GAN's CIFAR-10 and ImageNet configs)
        self.embed_dim = (z_dim if embed_dim is None else int(embed_dim)) if num_classes > 1 else 0
        if self.embed_dim:
            self.embed = nn.Parameter(class_embedding(num_classes, self.embed_dim))
        self.basis = nn.Parameter(torch.randn(widths[0], 4, 4))
        self.basis_linear = nn.Linear(z_dim + self.embed_dim, widths[0], bias=False)
        msr_init_(self.basis_linear.weight)
        self.stages = nn.ModuleList(self._blocks(widths, blocks, expansion, group_channels, kernel))
        self.transitions = nn.ModuleList(
            Conv(a, b) if a != b else nn.Identity() for a, b in zip(widths[:-1], widths[1:]))
        self.to_image = Conv(widths[-1], channels)

    def forward(self, z: torch.Tensor, class_labels: torch.Tensor | None = None,
                truncation: float | None = None) -> torch.Tensor:
        """``truncation`` acts on how z is drawn (:mod:`genzoo.gan.latents`), not here."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise UserError(f"r3gan: expected latents [N, {self.z_dim}], got {tuple(z.shape)}")
        if self.embed_dim:
            if class_labels is None:
                raise UserError("r3gan: this generator is class-conditional; give class labels")
            z = torch.cat([z, _class_rows(self.embed, class_labels, self.num_classes).to(z.dtype)], dim=1)
        x = self.basis.to(z.dtype)[None] * self.basis_linear(z)[:, :, None, None]
        for i, blocks in enumerate(self.stages):
            if i:
                x = resample(self.transitions[i - 1](x), BILINEAR, "up")
            for block in blocks:
                x = block(x)
        return self.to_image(x)

    def ortho_parameters(self) -> Iterator[torch.Tensor]:
        return (p for name, p in self.named_parameters() if p.ndim >= 2 and name != "basis")


@register("r3gan-d")
class R3GANDiscriminator(_Net):
    """D(x, y): 1×1 convolution from the image → stages of residual blocks, downsampling ×2 between stages
    → depthwise 4×4 convolution and a linear layer → projected onto e(y) (or one logit unconditionally)."""

    def __init__(self, resolution: int = 32, channels: int = 3, ch: int | Sequence[int] = 64,
                 num_classes: int = 0, embed_dim: int | None = None, blocks: int = 2, expansion: int = 2,
                 group_channels: int = 16, kernel: int = 3):
        super().__init__()
        widths = _stage_widths(resolution, ch)[::-1]  # from the image down to 4×4
        self.resolution, self.num_classes = resolution, num_classes
        self.embed_dim = (widths[0] if embed_dim is None else int(embed_dim)) if num_classes > 1 else 0
        self.from_image = Conv(channels, widths[0])
        self.stages = nn.ModuleList(self._blocks(widths, blocks, expansion, group_channels, kernel))
        self.transitions = nn.ModuleList(
            Conv(a, b) if a != b else nn.Identity() for a, b in zip(widths[:-1], widths[1:]))
        self.basis = Conv(widths[-1], widths[-1], 4, groups=widths[-1], padding=0)
        self.out = nn.Linear(widths[-1], self.embed_dim or 1, bias=False)
        msr_init_(self.out.weight)
        if self.embed_dim:
            gain = 1 / math.sqrt(self.embed_dim)
            self.embed = nn.Parameter(class_embedding(num_classes, self.embed_dim, gain))

    def forward(self, x: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        x = self.from_image(x)
        for i, blocks in enumerate(self.stages):
            for block in blocks:
                x = block(x)
            if i < len(self.transitions):
                x = self.transitions[i](resample(x, BILINEAR, "down"))
        h = self.out(self.basis(x).flatten(1))
        if self.embed_dim:
            if class_labels is None:
                raise UserError("r3gan-d: this discriminator is class-conditional; give class labels")
            h = (h * _class_rows(self.embed, class_labels, self.num_classes).to(h.dtype)).sum(1, keepdim=True)
        return h.flatten()
