"""BigGAN and BigGAN-deep (Brock, Donahue & Simonyan, ICLR 2019): generators and projection discriminators.

Registered networks: ``biggan`` / ``biggan-deep`` (generators, ``G(z, class_labels) -> image in [-1, 1]``)
and ``biggan-d`` / ``biggan-deep-d`` (discriminators, ``D(image, class_labels) -> logits [N]``).
Widths scale with ``ch`` so a tiny configuration trains on a CPU at 32 px.

The module layout follows BigGAN-PyTorch (``blocks.i.0`` residual block, ``blocks.i.1`` attention) for
BigGAN and the BigGAN-deep PyTorch port (``layers.i``, ``bn_0``..``conv_3``) for BigGAN-deep, so the
released checkpoints map onto these modules by renaming (``genzoo.checkpoints.biggan``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from genzoo.errors import UserError
from genzoo.nets import register
from genzoo.nets.fused import attend_channels, upsample_nearest2x

# ----------------------------------------------------------------------------- spectral norm


#: the generator's output BatchNorm epsilon: BigGAN-PyTorch's ``layers.bn`` default (``--BN_eps`` does
#: not reach that layer)
OUTPUT_BN_EPS = 1e-5


class SpectralNorm:
    """Mixin: the layer's ``weight`` divided by its top singular value σ (Miyato et al. 2018, eq. 8).

    σ = uᵀ W v with u, v kept as buffers. In training mode one power-iteration step
    (v ← Wᵀu/‖Wᵀu‖, u ← Wv/‖Wv‖) refines them before use; in eval mode the stored vectors are used
    as they are (the semantics of ``torch.nn.utils.spectral_norm``). W is the weight flattened to
    [weight.shape[0], -1].
    """

    weight: nn.Parameter

    def _init_spectral_norm(self, eps: float = 1e-12, power_iterations: int = 1) -> None:
        rows = self.weight.shape[0]
        cols = self.weight[0].numel()
        self.sn_eps = eps
        self.power_iterations = power_iterations
        self.register_buffer("u", F.normalize(torch.randn(rows), dim=0, eps=eps))
        self.register_buffer("v", F.normalize(torch.randn(cols), dim=0, eps=eps))

    def weight_matrix(self) -> torch.Tensor:
        return self.weight.reshape(self.weight.shape[0], -1)

    def sigma(self) -> torch.Tensor:
        """The current estimate of the top singular value (power iteration first in training mode)."""
        w = self.weight_matrix()
        if self.training and self.power_iterations > 0:
            with torch.no_grad():
                u, v = self.u, self.v
                wd = w.detach().to(u.dtype)
                for _ in range(self.power_iterations):
                    v = F.normalize(wd.t() @ u, dim=0, eps=self.sn_eps)
                    u = F.normalize(wd @ v, dim=0, eps=self.sn_eps)
                self.u.copy_(u)
                self.v.copy_(v)
        # clones: the buffers may be updated again before backward (D runs on real and fake)
        u, v = self.u.clone().to(w.dtype), self.v.clone().to(w.dtype)
        return torch.dot(u, (w @ v).to(u.dtype))  # under autocast w @ v is bf16/fp16, u is not

    def normalized_weight(self) -> torch.Tensor:
        return self.weight / self.sigma()


class SNConv2d(nn.Conv2d, SpectralNorm):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        padding: int | None = None,
        bias: bool = True,
        sn_eps: float = 1e-12,
    ):
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            padding=kernel_size // 2 if padding is None else padding,
            bias=bias,
        )
        self._init_spectral_norm(sn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.normalized_weight(), self.bias, self.stride, self.padding)


class SNLinear(nn.Linear, SpectralNorm):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, sn_eps: float = 1e-12):
        super().__init__(in_features, out_features, bias=bias)
        self._init_spectral_norm(sn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.normalized_weight(), self.bias)


class SNEmbedding(nn.Embedding, SpectralNorm):
    """Spectrally normalised class embedding of the discriminator's projection term (W: [classes, dim])."""

    def __init__(self, num_embeddings: int, embedding_dim: int, sn_eps: float = 1e-12):
        super().__init__(num_embeddings, embedding_dim)
        self._init_spectral_norm(sn_eps)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return F.embedding(labels, self.normalized_weight())


def spectral_layers(module: nn.Module) -> Iterator[SpectralNorm]:
    return (m for m in module.modules() if isinstance(m, SpectralNorm))


def orthogonal_init(module: nn.Module) -> None:
    """Orthogonal initialisation of every conv / linear / embedding weight (BigGAN's 'ortho' init)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
            nn.init.orthogonal_(m.weight)
            if getattr(m, "bias", None) is not None and isinstance(m.bias, nn.Parameter):
                nn.init.zeros_(m.bias)


# ----------------------------------------------------------------------------- batch norm


class StatBatchNorm(nn.Module):
    """Batch norm with running statistics, optionally class-conditional.

    Conditional (``cond_dim > 0``): gain 1 + Linear(c) and bias Linear(c), both spectrally normalised
    and bias-free (BigGAN §3, "conditional BatchNorm"). Unconditional: learned ``weight`` and ``bias``.
    Training mode normalises with batch statistics and updates the running ones (momentum 0.1, or a
    cumulative average while accumulating standing statistics); eval mode uses the running ones.

    ``n_stats > 1`` keeps statistics for that many truncation values ψ ∈ [0, 1] (the BigGAN-deep
    port's ``running_means``/``running_vars``), chosen by ``truncation`` at eval time.
    """

    def __init__(
        self,
        num_features: int,
        cond_dim: int = 0,
        eps: float = 1e-5,
        momentum: float = 0.1,
        n_stats: int = 1,
        sn_eps: float = 1e-12,
    ):
        super().__init__()
        self.num_features, self.cond_dim, self.eps, self.momentum = num_features, cond_dim, eps, momentum
        self.n_stats = n_stats
        self._standing_count: int | None = None
        if cond_dim > 0:
            self.gain = SNLinear(cond_dim, num_features, bias=False, sn_eps=sn_eps)
            self.bias = SNLinear(cond_dim, num_features, bias=False, sn_eps=sn_eps)
        else:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        if n_stats > 1:
            self.register_buffer("running_means", torch.zeros(n_stats, num_features))
            self.register_buffer("running_vars", torch.ones(n_stats, num_features))
        else:
            self.register_buffer("running_mean", torch.zeros(num_features))
            self.register_buffer("running_var", torch.ones(num_features))

    def accumulate_standing(self, start: bool) -> None:
        """Start (reset the statistics, then average every training-mode batch) or stop standing stats."""
        if start:
            if self.n_stats > 1:
                raise UserError(
                    "--standing-stats: this model stores statistics per truncation value; "
                    "standing statistics do not apply"
                )
            self.running_mean.zero_()
            self.running_var.fill_(1.0)
            self._standing_count = 0
        else:
            self._standing_count = None

    def stats(self, truncation: float | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Running (mean, var); with ``n_stats > 1`` those stored for ``truncation`` (default 1).

        Between two stored values the port mixes them as ``s[i]·c + s[i+1]·(1 − c)`` with
        ``c = frac(ψ / step)``; kept as it is, since the released statistics were used that way.
        """
        if self.n_stats == 1:
            return self.running_mean, self.running_var
        truncation = 1.0 if truncation is None else float(truncation)
        if not 0 < truncation <= 1:
            raise UserError(f"--truncation: this model needs 0 < ψ <= 1, got {truncation}")
        coef, start = math.modf(truncation / (1.0 / (self.n_stats - 1)))
        start = int(start)
        if coef == 0.0:
            return self.running_means[start], self.running_vars[start]
        mean = self.running_means[start] * coef + self.running_means[start + 1] * (1 - coef)
        var = self.running_vars[start] * coef + self.running_vars[start + 1] * (1 - coef)
        return mean, var

    def forward(
        self, x: torch.Tensor, cond: torch.Tensor | None = None, truncation: float | None = None
    ) -> torch.Tensor:
        if self.training and self.n_stats > 1:
            out = F.batch_norm(x, None, None, training=True, eps=self.eps)
        elif self.training:
            momentum = self.momentum
            if self._standing_count is not None:
                self._standing_count += 1
                momentum = 1.0 / self._standing_count
            out = F.batch_norm(
                x, self.running_mean, self.running_var, training=True, momentum=momentum, eps=self.eps
            )
        else:
            mean, var = self.stats(truncation)
            out = (x - mean[:, None, None]) * torch.rsqrt(var[:, None, None] + self.eps)
        if self.cond_dim > 0:
            return out * (1 + self.gain(cond))[:, :, None, None] + self.bias(cond)[:, :, None, None]
        return out * self.weight[:, None, None] + self.bias[:, None, None]


# ----------------------------------------------------------------------------- shared blocks


class SelfAttention(nn.Module):
    """SAGAN non-local block (Zhang et al. 2019): θ, φ at C/8, g at C/2, 2×2 max-pool on φ and g,
    unscaled softmax(θᵀφ), output o(g·βᵀ) added with a learned γ that starts at 0."""

    def __init__(self, ch: int, sn_eps: float = 1e-12):
        super().__init__()
        if ch % 8:
            raise UserError(f"self-attention needs channels divisible by 8, got {ch} (raise --g-ch/--d-ch)")
        self.theta = SNConv2d(ch, ch // 8, 1, bias=False, sn_eps=sn_eps)
        self.phi = SNConv2d(ch, ch // 8, 1, bias=False, sn_eps=sn_eps)
        self.g = SNConv2d(ch, ch // 2, 1, bias=False, sn_eps=sn_eps)
        self.o = SNConv2d(ch // 2, ch, 1, bias=False, sn_eps=sn_eps)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, *unused) -> torch.Tensor:
        n, c, h, w = x.shape
        q = self.theta(x).flatten(2)[:, None]  # [N, 1, C/8, HW], one head
        k = F.max_pool2d(self.phi(x), 2).flatten(2)[:, None]  # [N, 1, C/8, HW/4]
        v = F.max_pool2d(self.g(x), 2).flatten(2)[:, None]  # [N, 1, C/2, HW/4]
        attn = attend_channels(q, k, v, scale=1.0)  # SAGAN uses no 1/√d scaling
        return x + self.gamma * self.o(attn.reshape(n, c // 2, h, w))


def _up(x: torch.Tensor) -> torch.Tensor:
    return upsample_nearest2x(x)


def _latent_condition(
    G: nn.Module,
    z: torch.Tensor,
    class_labels: torch.Tensor | None,
    class_embedding: torch.Tensor | None,
    name: str,
) -> torch.Tensor:
    """Check the latents' shape; the class embedding given, or the shared embedding of the labels."""
    if z.ndim != 2 or z.shape[1] != G.z_dim:
        raise UserError(f"{name}: expected latents [N, {G.z_dim}], got {tuple(z.shape)}")
    if class_embedding is not None:
        return class_embedding
    return _embed_classes(G.shared, class_labels, z.shape[0], z.device)


def _embed_classes(
    shared: nn.Embedding, class_labels: torch.Tensor | None, n: int, device: torch.device
) -> torch.Tensor:
    """Shared class embedding of int labels [N], or of soft class vectors [N, classes] (interpolation)."""
    if class_labels is None:
        class_labels = torch.zeros(n, dtype=torch.long, device=device)
    if class_labels.is_floating_point():
        if class_labels.ndim != 2 or class_labels.shape[1] != shared.num_embeddings:
            raise UserError(
                f"class vectors: expected [N, {shared.num_embeddings}], got {tuple(class_labels.shape)}"
            )
        return class_labels.to(shared.weight.dtype) @ shared.weight
    # checked where it costs no host-device synchronisation (CPU tensors, as labels arrive from the CLI
    # and the API); on an accelerator the check would stall every training step on two .item() reads
    if class_labels.device.type == "cpu" and class_labels.numel() and (
        int(class_labels.min()) < 0 or int(class_labels.max()) >= shared.num_embeddings
    ):
        raise UserError(
            f"--class: expected labels in [0, {shared.num_embeddings}), got "
            f"{class_labels.min().item()}..{class_labels.max().item()}"
        )
    return shared(class_labels)


#: generator channel multipliers per resolution: block i maps mults[i]·ch to mults[i+1]·ch (BigGAN-PyTorch)
G_CHANNEL_MULTS = {
    16: [4, 4, 4],
    32: [4, 4, 4, 4],
    64: [16, 16, 8, 4, 2],
    128: [16, 16, 8, 4, 2, 1],
    256: [16, 16, 8, 8, 4, 2, 1],
    512: [16, 16, 8, 8, 4, 2, 1, 1],
}
#: discriminator output multipliers per block and which blocks downsample (BigGAN-PyTorch)
D_CHANNEL_MULTS = {
    8: ([4, 4], [True, False]),
    16: ([4, 4, 4], [True, False, False]),
    32: ([4, 4, 4, 4], [True, True, False, False]),
    64: ([1, 2, 4, 8, 16], [True] * 4 + [False]),
    128: ([1, 2, 4, 8, 16, 16], [True] * 5 + [False]),
    256: ([1, 2, 4, 8, 8, 16, 16], [True] * 6 + [False]),
    512: ([1, 1, 2, 4, 8, 8, 16, 16], [True] * 7 + [False]),
}


def _g_mults(resolution: int, bottom_width: int, channel_mults: Sequence[int] | None) -> list[int]:
    if channel_mults is None:
        if resolution not in G_CHANNEL_MULTS:
            raise UserError(
                f"BigGAN: no default channel multipliers for {resolution} px; give channel_mults "
                f"(defaults exist for {sorted(G_CHANNEL_MULTS)})"
            )
        channel_mults = G_CHANNEL_MULTS[resolution]
    ups = len(channel_mults) - 1
    if bottom_width * 2**ups != resolution:
        raise UserError(
            f"BigGAN: {ups} up-sampling blocks from {bottom_width} px give {bottom_width * 2**ups} px, "
            f"not the {resolution} px asked for"
        )
    return list(channel_mults)


def _d_mults(
    resolution: int, channel_mults: Sequence[int] | None, downsample: Sequence[bool] | None
) -> tuple[list[int], list[bool]]:
    if channel_mults is None:
        if resolution not in D_CHANNEL_MULTS:
            raise UserError(
                f"BigGAN D: no default channel multipliers for {resolution} px; give channel_mults"
            )
        channel_mults, default_down = D_CHANNEL_MULTS[resolution]
        downsample = default_down if downsample is None else downsample
    if downsample is None:
        downsample = [True] * (len(channel_mults) - 1) + [False]
    if len(downsample) != len(channel_mults):
        raise UserError("BigGAN D: channel_mults and downsample must have one entry per block")
    return list(channel_mults), [bool(d) for d in downsample]


class _GeneratorBase(nn.Module):
    shared: nn.Embedding
    z_dim: int
    num_classes: int

    def ortho_parameters(self) -> Iterator[torch.Tensor]:
        """Weights the orthogonal regulariser acts on: all matrices except the shared embedding
        (BigGAN-PyTorch's blacklist)."""
        return (p for name, p in self.named_parameters() if p.ndim >= 2 and not name.startswith("shared."))


# ----------------------------------------------------------------------------- BigGAN


class GBlock(nn.Module):
    """BigGAN residual up-block: BN-ReLU-up-conv3-BN-ReLU-conv3, skip up + 1×1 conv (Fig. 15b)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        cond_dim: int,
        upsample: bool = True,
        bn_eps: float = 1e-5,
        sn_eps: float = 1e-12,
    ):
        super().__init__()
        self.upsample = upsample
        self.bn1 = StatBatchNorm(in_ch, cond_dim, eps=bn_eps, sn_eps=sn_eps)
        self.conv1 = SNConv2d(in_ch, out_ch, 3, sn_eps=sn_eps)
        self.bn2 = StatBatchNorm(out_ch, cond_dim, eps=bn_eps, sn_eps=sn_eps)
        self.conv2 = SNConv2d(out_ch, out_ch, 3, sn_eps=sn_eps)
        self.conv_sc = SNConv2d(in_ch, out_ch, 1, sn_eps=sn_eps) if (in_ch != out_ch or upsample) else None

    def forward(self, x: torch.Tensor, cond: torch.Tensor, truncation: float | None = None) -> torch.Tensor:
        h = F.relu(self.bn1(x, cond, truncation))
        if self.upsample:
            h, x = _up(h), _up(x)
        h = self.conv2(F.relu(self.bn2(self.conv1(h), cond, truncation)))
        return h + (self.conv_sc(x) if self.conv_sc is not None else x)


@register("biggan")
class BigGANGenerator(_GeneratorBase):
    """BigGAN generator (Brock et al. 2019, Fig. 15a / Table 4).

    Hierarchical latents: z is split into (blocks + 1) equal chunks; chunk 0 feeds the first linear
    layer and chunk i+1 is concatenated after the shared class embedding to condition block i's
    batch norms. ``z_dim`` is rounded down to a multiple of the chunk count (as BigGAN-PyTorch does).
    """

    def __init__(
        self,
        resolution: int = 128,
        channels: int = 3,
        ch: int = 96,
        z_dim: int = 120,
        shared_dim: int = 128,
        num_classes: int = 1000,
        attn_res: Sequence[int] = (64,),
        hier: bool = True,
        channel_mults: Sequence[int] | None = None,
        bottom_width: int = 4,
        bn_eps: float = 1e-5,
        sn_eps: float = 1e-12,
        truncation_style: str = "resample",
    ):
        super().__init__()
        mults = _g_mults(resolution, bottom_width, channel_mults)
        self.resolution, self.channels, self.out_channels = resolution, channels, channels
        self.num_classes, self.label_dim = num_classes, num_classes
        self.bottom_width, self.hier, self.truncation_style = bottom_width, hier, truncation_style
        num_blocks = len(mults) - 1
        self.chunk = z_dim // (num_blocks + 1) if hier else 0
        self.z_dim = self.chunk * (num_blocks + 1) if hier else z_dim
        cond_dim = shared_dim + self.chunk
        self.shared = nn.Embedding(num_classes, shared_dim)
        self.linear = SNLinear(self.chunk if hier else z_dim, mults[0] * ch * bottom_width**2, sn_eps=sn_eps)
        blocks, res = [], bottom_width
        for i in range(num_blocks):
            res *= 2
            layers = [GBlock(mults[i] * ch, mults[i + 1] * ch, cond_dim, True, bn_eps, sn_eps)]
            if res in attn_res:
                layers.append(SelfAttention(mults[i + 1] * ch, sn_eps))
            blocks.append(nn.ModuleList(layers))
        self.blocks = nn.ModuleList(blocks)
        # BigGAN-PyTorch builds the output BN without --BN_eps: it always uses its default 1e-5
        self.out_bn = StatBatchNorm(mults[-1] * ch, 0, eps=OUTPUT_BN_EPS)
        self.out_conv = SNConv2d(mults[-1] * ch, channels, 3, sn_eps=sn_eps)
        orthogonal_init(self)

    def block_conditions(self, z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(input of the first linear layer, the condition vector of each block)."""
        if not self.hier:
            return z, [y] * len(self.blocks)
        zs = torch.split(z, self.chunk, dim=1)
        return zs[0], [torch.cat([y, chunk], dim=1) for chunk in zs[1:]]

    def forward(
        self,
        z: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        truncation: float | None = None,
        class_embedding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        y = _latent_condition(self, z, class_labels, class_embedding, "BigGAN")
        first, conds = self.block_conditions(z, y)
        h = self.linear(first).view(z.shape[0], -1, self.bottom_width, self.bottom_width)
        for layers, cond in zip(self.blocks, conds):
            h = layers[0](h, cond, truncation)
            for attention in layers[1:]:
                h = attention(h)
        return torch.tanh(self.out_conv(F.relu(self.out_bn(h, truncation=truncation))))


class DBlock(nn.Module):
    """BigGAN residual down-block (Fig. 15c): [ReLU]-conv3-ReLU-conv3-avgpool, skip 1×1 conv + avgpool.

    The pre-activation is out of place: the skip sees the block's input before the ReLU, as in
    BigGAN-PyTorch's ``DBlock.forward`` (an out-of-place ``F.relu`` whatever ``--D_nl`` is).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        preactivation: bool,
        downsample: bool,
        sn_eps: float = 1e-12,
    ):
        super().__init__()
        self.preactivation, self.downsample = preactivation, downsample
        self.conv1 = SNConv2d(in_ch, out_ch, 3, sn_eps=sn_eps)
        self.conv2 = SNConv2d(out_ch, out_ch, 3, sn_eps=sn_eps)
        self.conv_sc = SNConv2d(in_ch, out_ch, 1, sn_eps=sn_eps) if (in_ch != out_ch or downsample) else None

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.preactivation:  # conv before pooling, cheaper when the block widens
            x = self.conv_sc(x) if self.conv_sc is not None else x
            return F.avg_pool2d(x, 2) if self.downsample else x
        x = F.avg_pool2d(x, 2) if self.downsample else x
        return self.conv_sc(x) if self.conv_sc is not None else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(x) if self.preactivation else x
        h = self.conv2(F.relu(self.conv1(h)))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        return h + self.shortcut(x)


class _ProjectionHead(nn.Module):
    """ReLU, global sum pooling, then linear(h) + ⟨embed(y), h⟩ (Miyato & Koyama 2018, eq. 3)."""

    linear: SNLinear
    embed: SNEmbedding

    def head(self, h: torch.Tensor, class_labels: torch.Tensor | None) -> torch.Tensor:
        h = F.relu(h).sum(dim=(2, 3))
        out = self.linear(h).squeeze(1)
        if class_labels is None:
            class_labels = torch.zeros(h.shape[0], dtype=torch.long, device=h.device)
        return out + (self.embed(class_labels) * h).sum(dim=1)


@register("biggan-d")
class BigGANDiscriminator(_ProjectionHead):
    """BigGAN projection discriminator (Fig. 15c, Table 4); returns one logit per image [N].

    Attention follows the first block whose output is at a resolution in ``attn_res``, or the blocks
    listed in ``attn_blocks`` (BigGAN-PyTorch's 32 px table labels every D block 16 px).
    """

    def __init__(
        self,
        resolution: int = 128,
        channels: int = 3,
        ch: int = 96,
        num_classes: int = 1000,
        attn_res: Sequence[int] = (64,),
        channel_mults: Sequence[int] | None = None,
        downsample: Sequence[bool] | None = None,
        sn_eps: float = 1e-12,
        attn_blocks: Sequence[int] | None = None,
    ):
        super().__init__()
        mults, downs = _d_mults(resolution, channel_mults, downsample)
        self.resolution, self.in_channels, self.num_classes = resolution, channels, num_classes
        blocks, in_ch, res, attended = [], channels, resolution, set()
        for i, (m, down) in enumerate(zip(mults, downs)):
            res //= 2 if down else 1
            layers = [
                DBlock(
                    in_ch,
                    m * ch,
                    preactivation=i > 0,
                    downsample=down,
                    sn_eps=sn_eps,
                )
            ]
            if (i in attn_blocks) if attn_blocks is not None else (res in attn_res and res not in attended):
                layers.append(SelfAttention(m * ch, sn_eps))
                attended.add(res)
            blocks.append(nn.ModuleList(layers))
            in_ch = m * ch
        self.blocks = nn.ModuleList(blocks)
        self.linear = SNLinear(in_ch, 1, sn_eps=sn_eps)
        self.embed = SNEmbedding(num_classes, in_ch, sn_eps=sn_eps)
        orthogonal_init(self)

    def forward(self, x: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        h = x
        for layers in self.blocks:
            for layer in layers:
                h = layer(h)
        return self.head(h, class_labels)


# ----------------------------------------------------------------------------- BigGAN-deep


class DeepGBlock(nn.Module):
    """BigGAN-deep generator block (Fig. 16b): BN-ReLU-conv1×1 (÷4), BN-ReLU-[up]-conv3, BN-ReLU-conv3,
    BN-ReLU-conv1×1; the skip keeps the first ``out`` channels (drops the rest) and up-samples."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        cond_dim: int,
        upsample: bool,
        bn_eps: float = 1e-4,
        sn_eps: float = 1e-12,
        n_stats: int = 1,
        channel_ratio: int = 4,
    ):
        super().__init__()
        if out_ch > in_ch:
            raise UserError(f"BigGAN-deep G blocks only keep or drop channels, got {in_ch} -> {out_ch}")
        mid = in_ch // channel_ratio
        self.upsample, self.out_ch = upsample, out_ch
        bn = lambda c: StatBatchNorm(c, cond_dim, eps=bn_eps, n_stats=n_stats, sn_eps=sn_eps)  # noqa: E731
        self.bn_0, self.conv_0 = bn(in_ch), SNConv2d(in_ch, mid, 1, sn_eps=sn_eps)
        self.bn_1, self.conv_1 = bn(mid), SNConv2d(mid, mid, 3, sn_eps=sn_eps)
        self.bn_2, self.conv_2 = bn(mid), SNConv2d(mid, mid, 3, sn_eps=sn_eps)
        self.bn_3, self.conv_3 = bn(mid), SNConv2d(mid, out_ch, 1, sn_eps=sn_eps)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, truncation: float | None = None) -> torch.Tensor:
        h = self.conv_0(F.relu(self.bn_0(x, cond, truncation)))
        h = F.relu(self.bn_1(h, cond, truncation))
        if self.upsample:
            h = _up(h)
        h = self.conv_1(h)
        h = self.conv_2(F.relu(self.bn_2(h, cond, truncation)))
        h = self.conv_3(F.relu(self.bn_3(h, cond, truncation)))
        skip = x[:, : self.out_ch]
        return h + (_up(skip) if self.upsample else skip)


def deep_layers(channel_mults: Sequence[int]) -> list[tuple[bool, int, int]]:
    """BigGAN-deep's block list: per resolution one block keeping channels, then one up-sampling
    block changing them — ``(upsample, in_mult, out_mult)`` as in the port's ``layers`` config."""
    layers = []
    for a, b in zip(channel_mults[:-1], channel_mults[1:]):
        layers += [(False, a, a), (True, a, b)]
    return layers


@register("biggan-deep")
class BigGANDeepGenerator(_GeneratorBase):
    """BigGAN-deep generator (Brock et al. 2019, App. B, Fig. 16a).

    The whole z concatenated with the class embedding, ``cond = [z, e(y)]``, feeds the first linear
    layer and every conditional batch norm; two bottleneck blocks per resolution; self-attention
    before the first block working at a resolution in ``attn_res``. ``rgb_channels`` > ``channels``
    pads the last conv (the released model has ``ch`` output channels and keeps the first 3).
    """

    def __init__(
        self,
        resolution: int = 128,
        channels: int = 3,
        ch: int = 128,
        z_dim: int = 128,
        shared_dim: int = 128,
        num_classes: int = 1000,
        attn_res: Sequence[int] = (64,),
        channel_mults: Sequence[int] | None = None,
        layers: Sequence[Sequence] | None = None,
        bottom_width: int = 4,
        bn_eps: float = 1e-4,
        sn_eps: float = 1e-12,
        n_stats: int = 1,
        rgb_channels: int | None = None,
        truncation_style: str = "resample",
    ):
        super().__init__()
        if layers is None:
            layers = deep_layers(_g_mults(resolution, bottom_width, channel_mults))
        layers = [(bool(up), int(a), int(b)) for up, a, b in layers]
        if bottom_width * 2 ** sum(up for up, _, _ in layers) != resolution:
            raise UserError(f"BigGAN-deep: the layers do not reach {resolution} px from {bottom_width} px")
        self.resolution, self.channels, self.out_channels = resolution, channels, channels
        self.num_classes, self.label_dim, self.z_dim = num_classes, num_classes, z_dim
        self.bottom_width, self.truncation_style = bottom_width, truncation_style
        cond_dim = z_dim + shared_dim
        self.shared = nn.Embedding(num_classes, shared_dim)
        self.linear = SNLinear(cond_dim, layers[0][1] * ch * bottom_width**2, sn_eps=sn_eps)
        modules, res, attended = [], bottom_width, set()
        for up, a, b in layers:
            if res in attn_res and res not in attended:
                modules.append(SelfAttention(a * ch, sn_eps))
                attended.add(res)
            modules.append(DeepGBlock(a * ch, b * ch, cond_dim, up, bn_eps, sn_eps, n_stats))
            res *= 2 if up else 1
        self.layers = nn.ModuleList(modules)
        self.bn = StatBatchNorm(layers[-1][2] * ch, 0, eps=bn_eps, n_stats=n_stats)
        self.conv_to_rgb = SNConv2d(layers[-1][2] * ch, rgb_channels or channels, 3, sn_eps=sn_eps)
        orthogonal_init(self)

    def forward(
        self,
        z: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        truncation: float | None = None,
        class_embedding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        y = _latent_condition(self, z, class_labels, class_embedding, "BigGAN-deep")
        cond = torch.cat([z, y], dim=1)
        h = self.linear(cond).view(z.shape[0], -1, self.bottom_width, self.bottom_width)
        for layer in self.layers:
            h = layer(h, cond, truncation) if isinstance(layer, DeepGBlock) else layer(h)
        h = self.conv_to_rgb(F.relu(self.bn(h, truncation=truncation)))
        return torch.tanh(h[:, : self.channels])


class DeepDBlock(nn.Module):
    """BigGAN-deep discriminator block (Fig. 16c): ReLU-conv1×1 (÷4), ReLU-conv3, ReLU-conv3, ReLU,
    [avgpool], conv1×1; the skip is [avgpool] then concatenated with a learned 1×1 conv supplying
    the extra channels."""

    def __init__(
        self, in_ch: int, out_ch: int, downsample: bool, sn_eps: float = 1e-12, channel_ratio: int = 4
    ):
        super().__init__()
        if out_ch < in_ch:
            raise UserError(f"BigGAN-deep D blocks only keep or add channels, got {in_ch} -> {out_ch}")
        mid = max(in_ch // channel_ratio, 1)
        self.downsample = downsample
        self.conv_0 = SNConv2d(in_ch, mid, 1, sn_eps=sn_eps)
        self.conv_1 = SNConv2d(mid, mid, 3, sn_eps=sn_eps)
        self.conv_2 = SNConv2d(mid, mid, 3, sn_eps=sn_eps)
        self.conv_3 = SNConv2d(mid, out_ch, 1, sn_eps=sn_eps)
        self.conv_sc = SNConv2d(in_ch, out_ch - in_ch, 1, sn_eps=sn_eps) if out_ch > in_ch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_0(F.relu(x))
        h = self.conv_2(F.relu(self.conv_1(F.relu(h))))
        h = F.relu(h)
        if self.downsample:
            h, x = F.avg_pool2d(h, 2), F.avg_pool2d(x, 2)
        skip = torch.cat([x, self.conv_sc(x)], dim=1) if self.conv_sc is not None else x
        return self.conv_3(h) + skip


@register("biggan-deep-d")
class BigGANDeepDiscriminator(_ProjectionHead):
    """BigGAN-deep projection discriminator: a 3×3 input conv, then two bottleneck blocks per
    resolution (the first down-samples), attention at ``attn_res``; one logit per image [N]."""

    def __init__(
        self,
        resolution: int = 128,
        channels: int = 3,
        ch: int = 128,
        num_classes: int = 1000,
        attn_res: Sequence[int] = (64,),
        channel_mults: Sequence[int] | None = None,
        downsample: Sequence[bool] | None = None,
        sn_eps: float = 1e-12,
    ):
        super().__init__()
        mults, downs = _d_mults(resolution, channel_mults, downsample)
        self.resolution, self.in_channels, self.num_classes = resolution, channels, num_classes
        self.input_conv = SNConv2d(channels, mults[0] * ch, 3, sn_eps=sn_eps)
        modules, in_ch, res, attended = [], mults[0] * ch, resolution, set()
        for m, down in zip(mults, downs):
            modules.append(DeepDBlock(in_ch, m * ch, down, sn_eps))
            modules.append(DeepDBlock(m * ch, m * ch, False, sn_eps))
            res //= 2 if down else 1
            if res in attn_res and res not in attended:
                modules.append(SelfAttention(m * ch, sn_eps))
                attended.add(res)
            in_ch = m * ch
        self.layers = nn.ModuleList(modules)
        self.linear = SNLinear(in_ch, 1, sn_eps=sn_eps)
        self.embed = SNEmbedding(num_classes, in_ch, sn_eps=sn_eps)
        orthogonal_init(self)

    def forward(self, x: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.input_conv(x)
        for layer in self.layers:
            h = layer(h)
        return self.head(h, class_labels)
