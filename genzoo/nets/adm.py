"""The ADM UNet of Dhariwal & Nichol 2021 ("Diffusion Models Beat GANs") and Nichol & Dhariwal 2021 (iDDPM).

Three networks, configured by the public code's own flag names and holding the public code's
``state_dict`` keys, so released guided-diffusion / improved-diffusion checkpoints load with
``strict=True``:

- ``adm``: the denoising UNet, ``forward(x, timesteps, y=None)`` (ε, or ε and the variance
  interpolation v with ``learn_sigma``);
- ``adm-sr``: the super-resolution UNet, the low-resolution image upsampled bilinearly and
  concatenated to the input (``forward(x, timesteps, y=None, low_res=...)``);
- ``adm-classifier``: the noise-aware classifier, the encoder half with attention pooling
  (``forward(x, timesteps) -> logits``).

The genzoo network convention ``forward(x, noise_labels, class_labels=None, **cond)`` is the same
call: the noise labels of an ADM model are its (possibly rescaled) discrete timesteps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from genzoo.errors import UserError
from genzoo.nets import register
from genzoo.nets.fused import attend_channels, attend_packed_tokens, group_norm, norm_silu, upsample_nearest2x
from genzoo.nets.winograd import Conv3x3

#: channel multipliers the public scripts pick from the image size when ``channel_mult`` is empty
DEFAULT_CHANNEL_MULT = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
    32: (1, 2, 2, 2),
}


# ----------------------------------------------------------------------------- flag parsing


def parse_channel_mult(channel_mult: str | Sequence[float], image_size: int) -> tuple[float, ...]:
    """``""`` -> the public default for ``image_size``; ``"1,2,2"`` or a list -> those multipliers."""
    if isinstance(channel_mult, str):
        if not channel_mult.strip():
            if image_size not in DEFAULT_CHANNEL_MULT:
                raise UserError(
                    f"channel_mult: no default for image_size {image_size}; give channel_mult "
                    f"(defaults exist for {', '.join(map(str, sorted(DEFAULT_CHANNEL_MULT)))})"
                )
            return DEFAULT_CHANNEL_MULT[image_size]
        try:
            channel_mult = [float(v) for v in channel_mult.split(",")]
        except ValueError:
            raise UserError(f"channel_mult: expected numbers like '1,2,2,2', got {channel_mult!r}") from None
    mult = tuple(int(v) if float(v).is_integer() else float(v) for v in channel_mult)
    if not mult or any(v <= 0 for v in mult):
        raise UserError(f"channel_mult: expected positive multipliers, got {channel_mult!r}")
    return mult


def parse_attention_resolutions(
    attention_resolutions: str | Sequence[int], image_size: int
) -> tuple[int, ...]:
    """Attention resolutions in pixels (``"32,16,8"``) -> the downsampling factors the blocks test."""
    if isinstance(attention_resolutions, str):
        try:
            attention_resolutions = [int(v) for v in attention_resolutions.split(",") if v.strip()]
        except ValueError:
            raise UserError(
                f"attention_resolutions: expected pixel sizes like '32,16,8', got {attention_resolutions!r}"
            ) from None
    return tuple(image_size // int(res) for res in attention_resolutions)


# ----------------------------------------------------------------------------- building blocks


class GroupNorm32(nn.GroupNorm):
    """GroupNorm with 32 groups, statistics accumulated in float32 whatever the input dtype.

    float32 and bfloat16 inputs go to ``F.group_norm`` as they are (its kernels accumulate bfloat16 in
    float32), sparing the two full-tensor casts of the public code's ``x.float() ... .type(x.dtype)``;
    float16 activations (``convert_to_fp16``) keep that explicit float32 round trip.
    """

    def __init__(self, channels: int):
        super().__init__(32, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float16:
            return super().forward(x.float()).type(x.dtype)
        return F.group_norm(x, 32, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [N, dim]: cos half then sin half, frequencies max_period^(−i/half) (DDPM, ADM)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    )
    args = timesteps.reshape(-1).float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class Upsample(nn.Module):
    """Nearest ×2 upsampling, then a 3×3 conv (key ``conv``) when ``use_conv``."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        out_channels = out_channels or channels
        if use_conv:
            self.conv = Conv3x3(channels, out_channels)
        elif out_channels != channels:
            raise ValueError("Upsample without a conv keeps the channel count")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = upsample_nearest2x(x)
        return self.conv(x) if hasattr(self, "conv") else x


class Downsample(nn.Module):
    """×2 downsampling (key ``op``): a stride-2 3×3 conv when ``use_conv``, else 2×2 average pooling."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        out_channels = out_channels or channels
        if use_conv:
            self.op = nn.Conv2d(channels, out_channels, 3, stride=2, padding=1)
        elif out_channels != channels:
            raise ValueError("Downsample without a conv keeps the channel count")
        else:
            self.op = nn.AvgPool2d(2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(nn.Module):
    """Residual block conditioned on the embedding (``in_layers``, ``emb_layers``, ``out_layers``,
    ``skip_connection``), optionally resampling (``up``/``down``) between its norm and first conv.

    With ``use_scale_shift_norm`` the embedding gives (scale, shift): h = norm(h)·(1 + scale) + shift
    (ADM §3 "adaptive group normalization"); otherwise it is added before the norm.
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        use_scale_shift_norm: bool = False,
        up: bool = False,
        down: bool = False,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.use_checkpoint = use_checkpoint
        self.in_layers = nn.Sequential(
            GroupNorm32(channels), nn.SiLU(), Conv3x3(channels, out_channels)
        )
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels)
        )
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            _zero(Conv3x3(out_channels, out_channels)),
        )
        self.skip_connection = (
            nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.use_checkpoint and torch.is_grad_enabled():
            return checkpoint(self._forward, x, emb, use_reentrant=False)
        return self._forward(x, emb)

    def _forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = norm_silu(self.in_layers[0], x)
        if self.updown:
            h, x = self.h_upd(h), self.x_upd(x)
        h = self.in_layers[2](h)
        emb_out = self.emb_layers(emb).type(h.dtype)[:, :, None, None]
        if self.use_scale_shift_norm:
            h = norm_silu(self.out_layers[0], h, emb_out.chunk(2, dim=1))
        else:
            h = norm_silu(self.out_layers[0], h + emb_out)
        h = self.out_layers[3](self.out_layers[2](h))
        return self.skip_connection(x).add_(h) if isinstance(self.skip_connection, nn.Conv2d) else x + h


def qkv_attention(qkv: torch.Tensor, num_heads: int, new_order: bool) -> torch.Tensor:
    """Multi-head self-attention over [N, 3·C, T] packed q, k, v -> [N, C, T] (heads major).

    Channel layout of ``qkv``: legacy order (heads, 3, d) or new order (3, heads, d). Uses
    ``scaled_dot_product_attention`` with scale d^(−1/2) = (d^(−1/4))², equal to scaling q and k by d^(−1/4).
    """
    n, width, length = qkv.shape
    d = width // (3 * num_heads)
    if new_order:
        q, k, v = qkv.reshape(n, 3, num_heads, d, length).unbind(1)
    else:
        q, k, v = qkv.reshape(n, num_heads, 3, d, length).unbind(2)
    out = attend_channels(q, k, v, scale=1.0 / math.sqrt(d))
    return out.reshape(n, num_heads * d, length)


def _heads(channels: int, num_heads: int, num_head_channels: int) -> int:
    if num_head_channels == -1:
        if channels % num_heads:
            raise UserError(f"num_heads: {num_heads} heads do not divide {channels} channels")
        return num_heads
    if channels % num_head_channels:
        raise UserError(f"num_head_channels: {num_head_channels} does not divide {channels} channels")
    return channels // num_head_channels


class AttentionBlock(nn.Module):
    """Spatial self-attention with a residual connection (``norm``, ``qkv``, ``proj_out``).

    Heads = C / num_head_channels when that is set, else num_heads. ``conv2d=True`` stores qkv and
    proj_out as 1×1 Conv2d ([3C, C, 1, 1]) as in the consistency-models checkpoints; the default is
    Conv1d ([3C, C, 1]) as in guided-diffusion and improved-diffusion.
    """

    def __init__(
        self,
        channels: int,
        num_heads: int = 1,
        num_head_channels: int = -1,
        new_order: bool = False,
        conv2d: bool = False,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        self.num_heads = _heads(channels, num_heads, num_head_channels)
        self.new_order = new_order
        self.conv2d = conv2d
        self.use_checkpoint = use_checkpoint
        conv = nn.Conv2d if conv2d else nn.Conv1d
        self.norm = GroupNorm32(channels)
        self.qkv = conv(channels, 3 * channels, 1)
        self.proj_out = _zero(conv(channels, channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        if self.use_checkpoint and torch.is_grad_enabled():
            return checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """x + proj_out(attention(qkv(norm(x)))), computed over tokens: the 1×1 convolutions as linear
        layers on [N, L, C], so q, k and v reach the fused kernel without a copy each."""
        # [N, L, C]: a view for channels_last maps
        tokens = group_norm(self.norm, x).flatten(2).transpose(1, 2)
        qkv = F.linear(tokens, self.qkv.weight.flatten(1), self.qkv.bias)
        d = x.shape[1] // self.num_heads
        h = attend_packed_tokens(qkv, self.num_heads, self.new_order, scale=1.0 / math.sqrt(d))
        h = F.linear(h, self.proj_out.weight.flatten(1), self.proj_out.bias)
        return x + h.transpose(1, 2).reshape(x.shape)


class AttentionPool2d(nn.Module):
    """Attention pooling (CLIP style): the spatial mean is prepended as a query token, a learned
    positional embedding added, one attention layer in the new (3, heads, d) order; output of that token."""

    def __init__(
        self, spatial_dim: int, embed_dim: int, num_head_channels: int, output_dim: int | None = None
    ):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(embed_dim, spatial_dim**2 + 1) / embed_dim**0.5)
        self.qkv_proj = nn.Conv1d(embed_dim, 3 * embed_dim, 1)
        self.c_proj = nn.Conv1d(embed_dim, output_dim or embed_dim, 1)
        self.num_heads = embed_dim // num_head_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        x = x.reshape(n, c, -1)
        x = torch.cat([x.mean(dim=-1, keepdim=True), x], dim=-1)
        x = x + self.positional_embedding[None].to(x.dtype)
        x = qkv_attention(self.qkv_proj(x), self.num_heads, new_order=True)
        return self.c_proj(x)[:, :, 0]


class EmbedSequential(nn.Sequential):
    """A sequence of layers in which residual blocks also receive the timestep embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, (ResBlock, AttentionBlock)) else layer(x)
        return x


# ----------------------------------------------------------------------------- networks


class _ADMEncoder(nn.Module):
    """The time embedding, input blocks and middle block shared by the UNet and the classifier."""

    def _build_encoder(
        self,
        image_size: int,
        in_channels: int,
        num_channels: int,
        num_res_blocks: int,
        attention_ds: tuple[int, ...],
        dropout: float,
        channel_mult: tuple[float, ...],
        num_heads: int,
        num_head_channels: int,
        use_scale_shift_norm: bool,
        resblock_updown: bool,
        use_new_attention_order: bool,
        attention_conv2d: bool,
        use_checkpoint: bool,
    ) -> None:
        self.model_channels = num_channels
        emb_dim = 4 * num_channels
        self.time_embed = nn.Sequential(
            nn.Linear(num_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        ch = int(channel_mult[0] * num_channels)
        self.input_blocks = nn.ModuleList([EmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        self._skip_channels = [ch]
        ds = 1
        attn = dict(
            num_heads=num_heads,
            num_head_channels=num_head_channels,
            new_order=use_new_attention_order,
            conv2d=attention_conv2d,
            use_checkpoint=use_checkpoint,
        )
        res = dict(use_scale_shift_norm=use_scale_shift_norm, use_checkpoint=use_checkpoint)
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                out_ch = int(mult * num_channels)
                layers: list[nn.Module] = [ResBlock(ch, emb_dim, dropout, out_ch, **res)]
                ch = out_ch
                if ds in attention_ds:
                    layers.append(AttentionBlock(ch, **attn))
                self.input_blocks.append(EmbedSequential(*layers))
                self._skip_channels.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(
                    EmbedSequential(
                        ResBlock(ch, emb_dim, dropout, ch, down=True, **res)
                        if resblock_updown
                        else Downsample(ch, use_conv=True)
                    )
                )
                self._skip_channels.append(ch)
                ds *= 2
        self.middle_block = EmbedSequential(
            ResBlock(ch, emb_dim, dropout, **res),
            AttentionBlock(ch, **attn),
            ResBlock(ch, emb_dim, dropout, **res),
        )
        self._ds, self._ch = ds, ch

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the blocks compute in (float16 after :meth:`convert_to_fp16`)."""
        return self.input_blocks[0][0].weight.dtype

    def convert_to_fp16(self) -> None:
        """Cast the convolutions of the blocks to float16, as the public code does for ``use_fp16``."""
        for blocks in self._fp16_parts():
            for m in blocks.modules():
                if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                    m.half()

    def convert_to_fp32(self) -> None:
        for blocks in self._fp16_parts():
            for m in blocks.modules():
                if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                    m.float()

    def _fp16_parts(self) -> list[nn.Module]:
        return [self.input_blocks, self.middle_block]


@register("adm")
class ADMUNet(_ADMEncoder):
    """The ADM denoising UNet (guided-diffusion ``UNetModel`` built as ``create_model`` does from its flags).

    ``forward(x, timesteps, y=None)`` returns [N, out_channels, H, W]: 3 channels, or 6 with
    ``learn_sigma`` (ε then the variance interpolation v ∈ [−1, 1]). ``y`` (alias ``class_labels``)
    are int64 class indices when ``class_cond`` (``num_classes`` of them, plus the null label
    ``num_classes`` with ``null_label``, which released checkpoints do not have).
    """

    def __init__(
        self,
        image_size: int = 64,
        num_channels: int = 128,
        num_res_blocks: int = 2,
        num_heads: int = 4,
        num_head_channels: int = -1,
        num_heads_upsample: int = -1,
        attention_resolutions: str | Sequence[int] = "16,8",
        channel_mult: str | Sequence[float] = "",
        dropout: float = 0.0,
        class_cond: bool = False,
        num_classes: int = 1000,
        learn_sigma: bool = False,
        use_scale_shift_norm: bool = True,
        resblock_updown: bool = False,
        use_new_attention_order: bool = False,
        use_fp16: bool = False,
        use_checkpoint: bool = False,
        in_channels: int = 3,
        out_channels: int | None = None,
        attention_conv2d: bool = False,
        null_label: bool = False,
        _net_in_channels: int | None = None,
    ):
        super().__init__()
        mult = parse_channel_mult(channel_mult, image_size)
        attention_ds = parse_attention_resolutions(attention_resolutions, image_size)
        self.resolution = self.image_size = int(image_size)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels or (2 * in_channels if learn_sigma else in_channels))
        self.learn_sigma = bool(learn_sigma)
        self.label_dim = int(num_classes) if class_cond else 0
        self.takes_null_label = bool(null_label) and bool(self.label_dim)  # index label_dim: CFG's null
        self.use_fp16 = bool(use_fp16)
        self._build_encoder(
            image_size,
            _net_in_channels or in_channels,
            num_channels,
            num_res_blocks,
            attention_ds,
            dropout,
            mult,
            num_heads,
            num_head_channels,
            use_scale_shift_norm,
            resblock_updown,
            use_new_attention_order,
            attention_conv2d,
            use_checkpoint,
        )
        emb_dim = 4 * num_channels
        if self.label_dim:
            # classifier-free guidance training reserves index label_dim for the dropped label
            self.label_emb = nn.Embedding(self.label_dim + int(null_label), emb_dim)
        ch, ds = self._ch, self._ds
        skips = list(self._skip_channels)
        up_attn = dict(
            num_heads=num_heads if num_heads_upsample == -1 else num_heads_upsample,
            num_head_channels=num_head_channels,
            new_order=use_new_attention_order,
            conv2d=attention_conv2d,
            use_checkpoint=use_checkpoint,
        )
        res = dict(use_scale_shift_norm=use_scale_shift_norm, use_checkpoint=use_checkpoint)
        self.output_blocks = nn.ModuleList()
        for level, m in reversed(list(enumerate(mult))):
            for i in range(num_res_blocks + 1):
                out_ch = int(num_channels * m)
                layers: list[nn.Module] = [ResBlock(ch + skips.pop(), emb_dim, dropout, out_ch, **res)]
                ch = out_ch
                if ds in attention_ds:
                    layers.append(AttentionBlock(ch, **up_attn))
                if level and i == num_res_blocks:
                    layers.append(
                        ResBlock(ch, emb_dim, dropout, ch, up=True, **res)
                        if resblock_updown
                        else Upsample(ch, use_conv=True)
                    )
                    ds //= 2
                self.output_blocks.append(EmbedSequential(*layers))
        self.out = nn.Sequential(
            GroupNorm32(ch),
            nn.SiLU(),
            _zero(nn.Conv2d(int(mult[0] * num_channels), self.out_channels, 3, padding=1)),
        )
        del self._skip_channels

    def _fp16_parts(self) -> list[nn.Module]:
        return [self.input_blocks, self.middle_block, self.output_blocks]

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        class_labels: torch.Tensor | None = None,
        **cond: torch.Tensor,
    ) -> torch.Tensor:
        if cond:
            raise TypeError(f"unexpected conditioning inputs {sorted(cond)} for an ADM UNet")
        y = class_labels if y is None else y
        if (y is not None) != bool(self.label_dim):
            raise ValueError("class labels must be given if and only if the model is class-conditional")
        timesteps = torch.as_tensor(timesteps, device=x.device)
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        if self.label_dim:
            emb = emb + self.label_emb(y.reshape(-1).long())
        h = x.type(self.dtype)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out[2](norm_silu(self.out[0], h.type(x.dtype)))


@register("adm-sr")
class ADMSuperRes(ADMUNet):
    """The ADM super-resolution UNet: ``low_res`` is upsampled bilinearly to the input size and
    concatenated to it, so the first conv sees 2·in_channels channels. ``image_size`` is the large size."""

    def __init__(self, image_size: int = 256, small_size: int = 64, in_channels: int = 3, **kwargs):
        super().__init__(
            image_size=image_size, in_channels=in_channels, _net_in_channels=2 * in_channels, **kwargs
        )
        self.small_size = int(small_size)

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        class_labels: torch.Tensor | None = None,
        low_res: torch.Tensor | None = None,
        **cond: torch.Tensor,
    ) -> torch.Tensor:
        if low_res is None:
            raise UserError(
                "a super-resolution model needs low_res, the image to upsample (genzoo sample: "
                "--sampler adm-ddpm or adm-ddim with --low-res BASE.npz)"
            )
        upsampled = F.interpolate(low_res.to(x.dtype), x.shape[-2:], mode="bilinear")
        return super().forward(
            torch.cat([x, upsampled], dim=1), timesteps, y, class_labels=class_labels, **cond
        )


@register("adm-classifier")
class ADMClassifier(_ADMEncoder):
    """The noise-aware classifier of ADM (guided-diffusion ``EncoderUNetModel`` as ``create_classifier``
    builds it): the UNet's encoder half, then pooling; ``forward(x_t, timesteps) -> logits``.

    Flags use the classifier's names without the ``classifier_`` prefix (``width``, ``depth``, ...).
    """

    def __init__(
        self,
        image_size: int = 64,
        width: int = 128,
        depth: int = 2,
        attention_resolutions: str | Sequence[int] = "32,16,8",
        channel_mult: str | Sequence[float] = "",
        num_head_channels: int = 64,
        num_heads: int = 1,
        use_scale_shift_norm: bool = True,
        resblock_updown: bool = True,
        pool: str = "attention",
        num_classes: int = 1000,
        dropout: float = 0.0,
        use_new_attention_order: bool = False,
        use_fp16: bool = False,
        use_checkpoint: bool = False,
        in_channels: int = 3,
    ):
        super().__init__()
        mult = parse_channel_mult(channel_mult, image_size)
        attention_ds = parse_attention_resolutions(attention_resolutions, image_size)
        self.resolution = self.image_size = int(image_size)
        self.in_channels = int(in_channels)
        self.num_classes = self.out_channels = int(num_classes)
        self.use_fp16 = bool(use_fp16)
        self.pool = pool
        self._build_encoder(
            image_size,
            in_channels,
            width,
            depth,
            attention_ds,
            dropout,
            mult,
            num_heads,
            num_head_channels,
            use_scale_shift_norm,
            resblock_updown,
            use_new_attention_order,
            False,
            use_checkpoint,
        )
        ch = self._ch
        if pool == "adaptive":
            self.out = nn.Sequential(
                GroupNorm32(ch),
                nn.SiLU(),
                nn.AdaptiveAvgPool2d((1, 1)),
                _zero(nn.Conv2d(ch, num_classes, 1)),
                nn.Flatten(),
            )
        elif pool == "attention":
            if num_head_channels == -1:
                raise UserError("pool: attention pooling needs num_head_channels")
            self.out = nn.Sequential(
                GroupNorm32(ch),
                nn.SiLU(),
                AttentionPool2d(image_size // self._ds, ch, num_head_channels, num_classes),
            )
        elif pool in ("spatial", "spatial_v2"):
            features = sum(self._skip_channels[1:]) + self._skip_channels[0] + ch
            if pool == "spatial":
                self.out = nn.Sequential(nn.Linear(features, 2048), nn.ReLU(), nn.Linear(2048, num_classes))
            else:
                self.out = nn.Sequential(
                    nn.Linear(features, 2048), GroupNorm32(2048), nn.SiLU(), nn.Linear(2048, num_classes)
                )
        else:
            raise UserError(f"pool: expected adaptive, attention, spatial or spatial_v2, got {pool!r}")
        del self._skip_channels

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        timesteps = torch.as_tensor(timesteps, device=x.device)
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        h = x.type(self.dtype)
        pooled = []
        for block in self.input_blocks:
            h = block(h, emb)
            if self.pool.startswith("spatial"):
                pooled.append(h.type(x.dtype).mean(dim=(2, 3)))
        h = self.middle_block(h, emb)
        if self.pool.startswith("spatial"):
            pooled.append(h.type(x.dtype).mean(dim=(2, 3)))
            return self.out(torch.cat(pooled, dim=-1))
        return self.out(h.type(x.dtype))
