"""DINOv2 ViT (Oquab et al. 2023) as the feature network of FD_DINOv2, the metric EDM2 reports beside FID.

Weight-compatible with the released ``dinov2_vit{s,b,l,g}14_pretrain.pth`` state dicts (and the
``*_reg4_pretrain.pth`` register variants): the width, depth, patch size, native position grid, MLP
width and MLP kind (GELU MLP, or the giant's SwiGLU with ``mlp.w12``/``mlp.w3``) are read from the
tensors; every released size uses 64-dimensional heads (384/6, 768/12, 1024/16, 1536/24). The feature
is the class token after the final LayerNorm (the hub model's output, ``head`` being the identity).

EDM2's detector (``calculate_metrics.py``, resize mode ``torch``, its default) feeds ViT-L/14 with the
images resized to 224×224 by antialiased bicubic interpolation of the 0..255 values (float32, no
rounding or clamping), divided by 255 and normalised with the ImageNet mean and standard deviation.

Nothing is downloaded: the file is given by ``--dinov2 PATH`` or ``GENZOO_DINOV2``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from genzoo.errors import UserError

DINOV2_ENV = "GENZOO_DINOV2"
DINOV2_SIZE = 224                       # EDM2's resize target (16×16 patches of 14 px)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HEAD_DIM = 64
LAYER_NORM_EPS = 1e-6

MISSING_WEIGHTS_MESSAGE = (
    "FD_DINOv2 needs the DINOv2 weights, and genzoo never downloads. EDM2 uses ViT-L/14: get "
    "dinov2_vitl14_pretrain.pth (facebookresearch/dinov2 README, 'Pretrained models'), put it anywhere "
    f"and pass --dinov2 PATH or set {DINOV2_ENV}=PATH")


# ----------------------------------------------------------------------------- preprocessing


def edm2_dinov2_preprocess(images: torch.Tensor, size: int = DINOV2_SIZE) -> torch.Tensor:
    """EDM2's DINOv2 input from uint8 (or 0..255 float) NCHW RGB: antialiased bicubic resize to
    ``size``² in float32, then (x/255 − mean)/std with the ImageNet constants. Grey images are
    repeated over three channels."""
    x = images.to(torch.float32)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True)
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x / 255 - mean) / std


# ----------------------------------------------------------------------------- network


@dataclass(frozen=True)
class DINOv2Config:
    width: int
    depth: int
    heads: int
    patch: int
    grid: int                        # native position grid (518 px / 14 = 37 for the released files)
    mlp_hidden: int
    swiglu: bool = False             # ViT-g: SwiGLU MLP (w12, w3)
    registers: int = 0               # *_reg4 variants: extra tokens after the class token
    layer_scale: bool = True
    # The hub's settings: antialias off and a 0.1 offset for the plain files, on and 0 for registers.
    interpolate_antialias: bool = False
    interpolate_offset: float = 0.1


def interpolate_pos_embed(pos_embed: torch.Tensor, grid_h: int, grid_w: int, antialias: bool = False,
                          offset: float = 0.1) -> torch.Tensor:
    """The position embedding [1, 1 + M², D] for a ``grid_h`` × ``grid_w`` patch grid, as DINOv2 does
    it: unchanged on the native square grid; otherwise the patch part is resized bicubically in float32
    with ``scale_factor`` (g + offset)/M (the offset moves the sampling positions, not the output size)
    or, without offset, to the size itself; the class token's entry is kept."""
    count = pos_embed.shape[1] - 1
    native = math.isqrt(count)
    if native * native != count:
        raise ValueError(f"position embedding of {count} patches is not a square grid")
    if grid_h == grid_w == native:
        return pos_embed
    dim = pos_embed.shape[-1]
    patches = pos_embed[:, 1:].float().reshape(1, native, native, dim).permute(0, 3, 1, 2)
    if offset:
        resize = {"scale_factor": ((grid_h + offset) / native, (grid_w + offset) / native)}
    else:
        resize = {"size": (grid_h, grid_w)}
    patches = F.interpolate(patches, mode="bicubic", antialias=antialias, **resize)
    if tuple(patches.shape[-2:]) != (grid_h, grid_w):
        raise ValueError(f"position grid {tuple(patches.shape[-2:])} instead of {(grid_h, grid_w)}")
    patches = patches.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)
    return torch.cat([pos_embed[:, :1].float(), patches], 1).to(pos_embed.dtype)


class _PatchEmbed(nn.Module):
    def __init__(self, patch: int, width: int):
        super().__init__()
        self.proj = nn.Conv2d(3, width, patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # [N, H·W, D], rows first


class _LayerScale(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class _Attention(nn.Module):
    """Multi-head self-attention, qkv laid out (3, heads, d), softmax(q·k/√d) by the fused kernel."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, width = x.shape
        q, k, v = self.qkv(x).reshape(n, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(n, length, width))


class _Mlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _SwiGLU(nn.Module):
    """SwiGLU (Shazeer 2020): w3(silu(x·W1) ⊙ x·W2), W1 and W2 stacked in ``w12``."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.w12 = nn.Linear(width, 2 * hidden)
        self.w3 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(gate) * value)


class _Block(nn.Module):
    """Pre-norm transformer block with layer scale: x + γ₁·attn(LN x), then x + γ₂·mlp(LN x)."""

    def __init__(self, config: DINOv2Config):
        super().__init__()
        width = config.width
        self.norm1 = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.attn = _Attention(width, config.heads)
        self.ls1 = _LayerScale(width) if config.layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.mlp = (_SwiGLU if config.swiglu else _Mlp)(width, config.mlp_hidden)
        self.ls2 = _LayerScale(width) if config.layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DINOv2ViT(nn.Module):
    """The DINOv2 backbone; parameter names are those of the released state dicts (``mask_token``, used
    only in training, is not kept). ``forward(normalised NCHW)`` returns the class token after the final
    norm [N, width]; the input's sides must be multiples of the patch size."""

    def __init__(self, config: DINOv2Config):
        super().__init__()
        self.config = config
        width = config.width
        self.patch_embed = _PatchEmbed(config.patch, width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + config.grid ** 2, width))
        if config.registers:
            self.register_tokens = nn.Parameter(torch.zeros(1, config.registers, width))
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Class token, register tokens and patch tokens after the final norm [N, 1 + R + H·W, D]."""
        patch = self.config.patch
        if x.shape[-2] % patch or x.shape[-1] % patch:
            raise ValueError(f"input {tuple(x.shape[-2:])} is not a multiple of the {patch}-px patch")
        x = x.to(self.cls_token.dtype)
        h = self.patch_embed(x)
        h = torch.cat([self.cls_token.expand(len(h), -1, -1), h], 1)
        h = h + interpolate_pos_embed(self.pos_embed, x.shape[-2] // patch, x.shape[-1] // patch,
                                      self.config.interpolate_antialias, self.config.interpolate_offset)
        if self.config.registers:  # after the position embedding, which they do not get
            h = torch.cat([h[:, :1], self.register_tokens.expand(len(h), -1, -1), h[:, 1:]], 1)
        for block in self.blocks:
            h = block(h)
        return self.norm(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tokens(x)[:, 0]


class DINOv2Features(nn.Module):
    """EDM2's FD_DINOv2 detector: ``forward(uint8 NCHW)`` returns ``{"pool": class token}`` (float32)."""

    def __init__(self, net: DINOv2ViT):
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"pool": self.net(edm2_dinov2_preprocess(images)).float()}


# ----------------------------------------------------------------------------- weights


def canonical_dinov2_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``module.``/``backbone.`` prefixes, the training-only ``mask_token`` and the chunked layout's chunk
    index (``blocks.C.I.`` -> ``blocks.I.``) removed."""
    keys = {key: re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.",
                        key.removeprefix("module.").removeprefix("backbone.")) for key in state}
    return {new: state[key] for key, new in keys.items() if new != "mask_token"}


def dinov2_config_from_state(state: Mapping[str, torch.Tensor], source: str = "--dinov2") -> DINOv2Config:
    """Width, depth, heads, patch, native grid and MLP kind read from a (canonical) state dict."""
    needed = ("cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight", "blocks.0.attn.qkv.weight")
    missing = [key for key in needed if key not in state]
    if missing:
        raise UserError(f"{source}: expected a DINOv2 state dict (dinov2_vit{{s,b,l,g}}14_pretrain.pth); "
                        f"missing {', '.join(missing)}")
    width = int(state["cls_token"].shape[-1])
    patch = int(state["patch_embed.proj.weight"].shape[-1])
    count = int(state["pos_embed"].shape[1]) - 1
    grid = math.isqrt(count)
    if width % HEAD_DIM or grid * grid != count:
        raise UserError(f"{source}: width {width} (expected a multiple of {HEAD_DIM}) or position grid of "
                        f"{count} patches (expected a square) is not DINOv2's")
    depth = 1 + max(int(m.group(1)) for key in state if (m := re.match(r"blocks\.(\d+)\.", key)))
    swiglu = "blocks.0.mlp.w12.weight" in state
    hidden = (state["blocks.0.mlp.w12.weight"].shape[0] // 2 if swiglu
              else state["blocks.0.mlp.fc1.weight"].shape[0] if "blocks.0.mlp.fc1.weight" in state else None)
    if hidden is None:
        raise UserError(f"{source}: expected a DINOv2 state dict; no blocks.0.mlp.fc1 or .w12 weight")
    registers = int(state["register_tokens"].shape[1]) if "register_tokens" in state else 0
    return DINOv2Config(width=width, depth=depth, heads=width // HEAD_DIM, patch=patch, grid=grid,
                        mlp_hidden=int(hidden), swiglu=swiglu, registers=registers,
                        layer_scale="blocks.0.ls1.gamma" in state, interpolate_antialias=registers > 0,
                        interpolate_offset=0.0 if registers else 0.1)


def dinov2_from_state(state: Mapping[str, torch.Tensor], source: str = "--dinov2") -> DINOv2ViT:
    """Build the backbone a state dict describes and load it strictly."""
    from genzoo.checkpoints import load_state_into

    state = canonical_dinov2_state(state)
    config = dinov2_config_from_state(state, source)
    with torch.device("meta"):  # every tensor is about to be overwritten: skip the random init
        net = DINOv2ViT(config)
    net = net.to_empty(device="cpu")
    load_state_into(net, {k: v.float() for k, v in state.items()}, source)
    return net.eval().requires_grad_(False)


def load_dinov2(path: str | Path | None = None, device: str | torch.device = "cpu") -> DINOv2Features:
    """The FD_DINOv2 detector with weights from ``path``, else ``$GENZOO_DINOV2`` (weights-only load)."""
    from genzoo.checkpoints import read_state_dict, weights_file

    path = weights_file(path, "--dinov2", DINOV2_ENV, MISSING_WEIGHTS_MESSAGE)
    try:
        state = read_state_dict(path)  # .safetensors, or torch.load(weights_only=True)
    except UserError as err:
        raise UserError(f"--dinov2 {err}; expected a DINOv2 state dict (e.g. dinov2_vitl14_pretrain.pth)"
                        ) from None
    return DINOv2Features(dinov2_from_state(state, f"--dinov2 {path}")).to(device)
