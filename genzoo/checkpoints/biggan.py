"""Released BigGAN checkpoints: the PyTorch port of DeepMind's BigGAN-deep and BigGAN-PyTorch's runs.

``biggan-hf``: huggingface/pytorch-pretrained-BigGAN's ``pytorch_model.bin`` (presets
``biggan-deep-128/256/512``; flags = that port's config keys). Spectral norm is stored as
``weight_orig``/``weight_u``/``weight_v`` (``torch.nn.utils.spectral_norm``), batch-norm statistics for
``n_stats`` truncation values, the first linear layer in TF's NHWC order. ``load_official`` returns a
module with the port's ``forward(z, class_vector, truncation)``.

``biggan-pytorch``: ajbrock/BigGAN-PyTorch's ``G.pth`` / ``G_ema.pth`` / ``D.pth`` (spectral norm as
``weight`` + ``u0``/``sv0`` buffers; flags = that repository's command-line names, e.g. ``G_ch``,
``dim_z``). G gets ``forward(z, y)`` with ``y = G.shared(class)`` as there; D gets ``forward(x, y)``.

Both become genzoo's ``biggan-deep`` / ``biggan`` networks by renaming keys; files are read with
``torch.load(weights_only=True)`` or safetensors only.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from genzoo.checkpoints import OfficialSource, load_state_into, read_state_dict, register_source
from genzoo.checkpoints.record import official_import
from genzoo.errors import UserError
from genzoo.nets.biggan import (
    D_CHANNEL_MULTS,
    BigGANDeepGenerator,
    BigGANDiscriminator,
    BigGANGenerator,
    SelfAttention,
)

# ----------------------------------------------------------------------------- flags


def coerce_flags(source: str, flags: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Flags typed like their defaults (``genzoo convert`` passes strings): "True" -> True,
    "[[false, 16, 8], ...]" -> a list, "1e-4" -> 1e-4."""
    out = dict(flags)
    for key, value in flags.items():
        default = defaults.get(key)
        if not isinstance(value, str) or default is None or isinstance(default, str):
            continue
        try:
            if isinstance(default, bool):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                out[key] = value.lower() in ("true", "1", "yes")
            elif isinstance(default, int):
                out[key] = int(value)
            elif isinstance(default, float):
                out[key] = float(value)
            elif isinstance(default, list):
                out[key] = ast.literal_eval(re.sub(r"\b(true|false)\b", lambda m: m.group(1).title(), value))
        except (ValueError, SyntaxError):
            raise UserError(
                f"{source}: flag {key}: cannot read {value!r} as a {type(default).__name__}"
            ) from None
    return out


# ----------------------------------------------------------------------------- biggan-hf

_HF_LAYERS_512 = [
    (False, 16, 16),
    (True, 16, 16),
    (False, 16, 16),
    (True, 16, 8),
    (False, 8, 8),
    (True, 8, 8),
    (False, 8, 8),
    (True, 8, 4),
    (False, 4, 4),
    (True, 4, 2),
    (False, 2, 2),
    (True, 2, 1),
    (False, 1, 1),
    (True, 1, 1),
]
_HF_LAYERS_128 = [
    (False, 16, 16),
    (True, 16, 16),
    (False, 16, 16),
    (True, 16, 8),
    (False, 8, 8),
    (True, 8, 4),
    (False, 4, 4),
    (True, 4, 2),
    (False, 2, 2),
    (True, 2, 1),
]
#: the port's BigGANConfig defaults (the 128 px model)
HF_DEFAULTS: dict[str, Any] = dict(
    output_dim=128,
    z_dim=128,
    class_embed_dim=128,
    channel_width=128,
    num_classes=1000,
    layers=_HF_LAYERS_128,
    attention_layer_position=8,
    eps=1e-4,
    n_stats=51,
)
HF_PRESETS = {
    "biggan-deep-128": dict(HF_DEFAULTS),
    "biggan-deep-256": {**HF_DEFAULTS, "output_dim": 256, "layers": _HF_LAYERS_512[:12]},
    "biggan-deep-512": {**HF_DEFAULTS, "output_dim": 512, "layers": _HF_LAYERS_512},
}


class BigGANDeepHF(nn.Module):
    """The port's public module: ``forward(z, class_vector, truncation)`` with z [N, z_dim] (truncated
    normal scaled by ψ), class_vector [N, num_classes] (one-hot or soft), 0 < ψ ≤ 1; images in [-1, 1]."""

    def __init__(self, net: BigGANDeepGenerator, flags: dict[str, Any], net_config: dict[str, Any]):
        super().__init__()
        self.net = net
        self.official_flags, self.net_config, self.official_source = flags, net_config, "biggan-hf"

    def forward(self, z: torch.Tensor, class_vector: torch.Tensor, truncation: float) -> torch.Tensor:
        if not 0 < float(truncation) <= 1:
            raise UserError(f"truncation: the BigGAN-deep port needs 0 < truncation <= 1, got {truncation}")
        return self.net(z, class_vector.float(), truncation=float(truncation))


def hf_net_config(flags: Mapping[str, Any]) -> dict[str, Any]:
    """genzoo ``biggan-deep`` kwargs for the port's config flags."""
    flags = {**HF_DEFAULTS, **coerce_flags("biggan-hf", flags, HF_DEFAULTS)}
    unknown = sorted(set(flags) - set(HF_DEFAULTS))
    if unknown:
        raise UserError(f"biggan-hf: unknown flag(s) {', '.join(unknown)}; valid: {', '.join(HF_DEFAULTS)}")
    layers = [[bool(up), int(a), int(b)] for up, a, b in flags["layers"]]
    position = int(flags["attention_layer_position"])
    res = 4 * 2 ** sum(up for up, _, _ in layers[:position])
    # The port conditions with cat(z, Linear(one_hot)) where the Linear has z_dim outputs.
    return dict(
        resolution=int(flags["output_dim"]),
        channels=3,
        ch=int(flags["channel_width"]),
        z_dim=int(flags["z_dim"]),
        shared_dim=int(flags["z_dim"]),
        num_classes=int(flags["num_classes"]),
        attn_res=[res] if 0 <= position < len(layers) else [],
        layers=layers,
        bn_eps=float(flags["eps"]),
        sn_eps=float(flags["eps"]),
        n_stats=int(flags["n_stats"]),
        rgb_channels=int(flags["channel_width"]),
        truncation_style="scaled",
    )


_HF_RENAMES = [
    (r"\.scale\.", ".gain."),
    (r"\.offset\.", ".bias."),
    (r"snconv1x1_theta", "theta"),
    (r"snconv1x1_phi", "phi"),
    (r"snconv1x1_g\.", "g."),
    (r"snconv1x1_o_conv", "o"),
    (r"weight_orig$", "weight"),
    (r"weight_u$", "u"),
    (r"weight_v$", "v"),
]


def hf_to_genzoo_state(state: Mapping[str, torch.Tensor], bottom_width: int = 4) -> dict[str, torch.Tensor]:
    """Rename the port's keys to genzoo's and reorder the first layer's outputs from NHWC to NCHW."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key == "embeddings.weight":
            out["shared.weight"] = value.t().contiguous()
            continue
        new = key[len("generator.") :] if key.startswith("generator.") else key
        new = new.replace("gen_z.", "linear.", 1) if new.startswith("gen_z.") else new
        for pattern, repl in _HF_RENAMES:
            new = re.sub(pattern, repl, new)
        out[new] = value
    for name in ("linear.weight", "linear.bias", "linear.u"):  # rows (h, w, c) -> (c, h, w); σ is unchanged
        if name in out:
            t = out[name]
            c = t.shape[0] // bottom_width**2
            out[name] = (
                t.reshape(bottom_width, bottom_width, c, *t.shape[1:])
                .permute(2, 0, 1, *range(3, t.ndim + 2))
                .reshape(t.shape)
                .contiguous()
            )
    return out


def _load_hf(state: Mapping[str, torch.Tensor], **flags: Any) -> BigGANDeepHF:
    net_config = hf_net_config(flags)
    net = BigGANDeepGenerator(**net_config)
    position = int(
        coerce_flags("biggan-hf", {**HF_DEFAULTS, **flags}, HF_DEFAULTS)["attention_layer_position"]
    )
    if net_config["attn_res"] and not isinstance(net.layers[position], SelfAttention):
        raise UserError(
            f"biggan-hf: attention_layer_position {position} is not the first layer at its resolution; "
            "genzoo places attention there"
        )
    converted = hf_to_genzoo_state(state)
    try:
        load_state_into(net, converted, "biggan-hf checkpoint")
    except UserError as err:
        guess = hf_guess_preset(state)
        raise UserError(f"{err}" + (f" (it looks like preset {guess})" if guess else "")) from None
    return BigGANDeepHF(
        net, {**HF_DEFAULTS, **coerce_flags("biggan-hf", flags, HF_DEFAULTS)}, net_config
    ).eval()


def hf_guess_preset(state: Mapping[str, torch.Tensor]) -> str | None:
    blocks = {m.group(1) for k in state if (m := re.match(r"generator\.layers\.(\d+)\.bn_0\.", k))}
    return {10: "biggan-deep-128", 12: "biggan-deep-256", 14: "biggan-deep-512"}.get(len(blocks))


# ----------------------------------------------------------------------------- biggan-pytorch

#: BigGAN-PyTorch's command-line defaults (train.py / utils.prepare_parser) for the keys used here
BP_DEFAULTS: dict[str, Any] = dict(
    resolution=128,
    n_classes=1000,
    G_ch=64,
    D_ch=64,
    dim_z=128,
    shared_dim=0,
    hier=False,
    G_shared=False,
    G_attn="64",
    D_attn="64",
    BN_eps=1e-5,
    SN_eps=1e-8,
    D_nl="relu",
    num_G_SVs=1,
    num_D_SVs=1,
)
BP_PRESETS = {
    # launch_BigGAN_bs256x8.sh, the released ImageNet 128 px run (G.pth, G_ema.pth, D.pth)
    "imagenet-128": {
        **BP_DEFAULTS,
        "G_ch": 96,
        "D_ch": 96,
        "dim_z": 120,
        "shared_dim": 128,
        "hier": True,
        "G_shared": True,
        "SN_eps": 1e-6,
        "G_nl": "inplace_relu",
        "D_nl": "inplace_relu",
    },
}


def _attn(text: Any) -> list[int]:
    return [int(r) for r in str(text).split("_") if r and int(r) > 0]


def bp_net_configs(flags: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """genzoo ``biggan`` and ``biggan-d`` kwargs for BigGAN-PyTorch flags."""
    f = {**BP_DEFAULTS, **coerce_flags("biggan-pytorch", flags, BP_DEFAULTS)}
    if not f["G_shared"]:
        raise UserError(
            "biggan-pytorch: only --G_shared checkpoints are supported (class-conditional BN through "
            "the shared embedding), as in the released runs"
        )
    if int(f["num_G_SVs"]) != 1 or int(f["num_D_SVs"]) != 1:
        raise UserError("biggan-pytorch: only num_G_SVs = num_D_SVs = 1 is supported")
    shared = int(f["shared_dim"]) or int(f["dim_z"])
    g = dict(
        resolution=int(f["resolution"]),
        channels=3,
        ch=int(f["G_ch"]),
        z_dim=int(f["dim_z"]),
        shared_dim=shared,
        num_classes=int(f["n_classes"]),
        attn_res=_attn(f["G_attn"]),
        hier=bool(f["hier"]),
        bn_eps=float(f["BN_eps"]),
        sn_eps=float(f["SN_eps"]),
    )
    d = dict(
        resolution=int(f["resolution"]),
        channels=3,
        ch=int(f["D_ch"]),
        num_classes=int(f["n_classes"]),
        attn_res=_attn(f["D_attn"]),
        sn_eps=float(f["SN_eps"]),
    )  # D_nl (relu / inplace_relu) changes no value: the official DBlock's pre-activation is out of place
    # BigGAN-PyTorch attaches D attention after every block whose table resolution is listed
    resolution = int(f["resolution"])
    if resolution == 32:
        table = [16, 16, 16, 16]
    else:
        _, downs = D_CHANNEL_MULTS.get(resolution, ([], []))
        table, res = [], resolution
        for down in downs:
            res //= 2 if down else 1
            table.append(res)
    d["attn_blocks"] = [i for i, r in enumerate(table) if r in d["attn_res"]]
    return g, d


def _sn_vectors(weight: torch.Tensor, u0: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The (u, v) BigGAN-PyTorch's eval-mode forward uses: one power-iteration step from the stored u0."""
    w = weight.reshape(weight.shape[0], -1).double()
    v = F.normalize(u0.reshape(1, -1).double() @ w, dim=1, eps=eps)
    u = F.normalize(v @ w.t(), dim=1, eps=eps)
    return u.reshape(-1).to(weight.dtype), v.reshape(-1).to(weight.dtype)


def bp_to_genzoo_state(state: Mapping[str, torch.Tensor], sn_eps: float) -> dict[str, torch.Tensor]:
    """Rename BigGAN-PyTorch keys to genzoo's; ``u0`` becomes the (u, v) its eval forward would use."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if re.search(r"(^|\.)(sv\d+|u\d+)$", key):
            if re.search(r"(^|\.)u[1-9]\d*$", key):
                raise UserError(f"biggan-pytorch: {key}: only one singular vector per layer is supported")
            continue
        new = key.replace("output_layer.0.", "out_bn.").replace("output_layer.2.", "out_conv.")
        new = new.replace("stored_mean", "running_mean").replace("stored_var", "running_var")
        if new in ("out_bn.gain",):
            new = "out_bn.weight"
        if new.endswith(".gamma") and value.ndim == 0:
            value = value.reshape(1)
        out[new] = value
        if key.endswith(".weight") and key[: -len("weight")] + "u0" in state:
            u, v = _sn_vectors(value, state[key[: -len("weight")] + "u0"], sn_eps)
            prefix = new[: -len("weight")]
            out[prefix + "u"], out[prefix + "v"] = u, v
    return out


class BigGANPyTorchG(nn.Module):
    """BigGAN-PyTorch's ``G``: ``forward(z, y)`` with ``y = G.shared(class_labels)``; images in [-1, 1]."""

    def __init__(self, net: BigGANGenerator, flags: dict[str, Any], net_config: dict[str, Any]):
        super().__init__()
        self.net = net
        self.official_flags, self.net_config, self.official_source = flags, net_config, "biggan-pytorch"

    @property
    def shared(self) -> nn.Embedding:
        return self.net.shared

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(z, class_embedding=y)


class BigGANPyTorchD(nn.Module):
    """BigGAN-PyTorch's ``D``: ``forward(x, y)`` -> logits [N, 1]."""

    def __init__(self, net: BigGANDiscriminator, flags: dict[str, Any], net_config: dict[str, Any]):
        super().__init__()
        self.net = net
        self.official_flags, self.net_config, self.official_source = flags, net_config, "biggan-pytorch"

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(x, y).view(-1, 1)


def _load_bp(state: Mapping[str, torch.Tensor], **flags: Any) -> nn.Module:
    flags = dict(flags)
    d_path = flags.pop("D_pth", None)
    g_config, d_config = bp_net_configs(flags)
    resolved = {**BP_DEFAULTS, **coerce_flags("biggan-pytorch", flags, BP_DEFAULTS)}
    if "embed.weight" in state:  # the discriminator
        if d_path:
            raise UserError("biggan-pytorch: --D_pth goes with G.pth / G_ema.pth, not with D.pth itself")
        return _load_bp_d(state, resolved, d_config, "biggan-pytorch D checkpoint")
    if "shared.weight" not in state:
        raise UserError(
            "biggan-pytorch: expected G.pth / G_ema.pth (with shared.weight) or D.pth (with embed.weight)"
        )
    net = BigGANGenerator(**g_config)
    load_state_into(net, bp_to_genzoo_state(state, g_config["sn_eps"]), "biggan-pytorch G checkpoint")
    G = BigGANPyTorchG(net, resolved, g_config).eval()
    if d_path:
        G.discriminator = _read_bp_d(Path(d_path), resolved, d_config)
    return G


def _load_bp_d(state: Mapping[str, torch.Tensor], resolved: dict[str, Any], d_config: dict[str, Any],
               source: str) -> BigGANPyTorchD:
    net = BigGANDiscriminator(**d_config)
    load_state_into(net, bp_to_genzoo_state(state, d_config["sn_eps"]), source)
    return BigGANPyTorchD(net, resolved, d_config).eval()


def _read_bp_d(path: Path, resolved: dict[str, Any], d_config: dict[str, Any]) -> BigGANPyTorchD:
    state = read_state_dict(path)
    if "embed.weight" not in state:
        raise UserError(f"--D_pth {path}: not a BigGAN-PyTorch discriminator (no embed.weight)")
    return _load_bp_d(state, resolved, d_config, f"--D_pth {path}")


def companion_discriminator(g_path: Path) -> Path | None:
    """The discriminator saved beside a generator (BigGAN-PyTorch writes ``G.pth``, ``G_ema.pth`` and
    ``D.pth`` into one folder; ``G_ema_best0.pth`` goes with ``D_best0.pth``), if it is there."""
    name = g_path.name
    if not (name.startswith("G") and name.endswith(".pth")):
        return None
    candidate = g_path.with_name("D" + (name[len("G_ema"):] if name.startswith("G_ema") else name[1:]))
    return candidate if candidate.is_file() else None


# ----------------------------------------------------------------------------- convert


def to_genzoo(
    module: nn.Module, flags: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
    """A genzoo ``gan`` model directory for a loaded BigGAN module: the generator (``G.*``) and, for
    BigGAN-PyTorch, its discriminator (``D.*``, built from ``config["d_net"]``) when ``--D_pth`` names it
    or a ``D.pth`` lies beside the converted ``G.pth`` / ``G_ema.pth``."""
    if isinstance(module, BigGANPyTorchD):
        raise UserError(
            "convert: D.pth is a discriminator; convert G.pth or G_ema.pth, which takes the D.pth beside "
            "it (or --D_pth PATH) into the model directory too"
        )
    arch = "biggan-deep" if isinstance(module.net, BigGANDeepGenerator) else "biggan"
    net = module.net
    config = {
        "family": "gan",
        "arch": arch,
        "net": module.net_config,
        "sampled_player": "G",
        "num_classes": net.num_classes,
        "resolution": net.resolution,
        "channels": net.channels,
        "source": module.official_source,
    }
    state = {f"G.{k}": v.detach().float() for k, v in net.state_dict().items()}
    discriminator = getattr(module, "discriminator", None)
    info = official_import(module)
    official_path = info.path if info is not None else None
    if discriminator is None and isinstance(module, BigGANPyTorchG) and official_path is not None:
        d_path = companion_discriminator(Path(official_path))
        if d_path is not None:
            discriminator = _read_bp_d(d_path, module.official_flags,
                                       bp_net_configs(module.official_flags)[1])
    if discriminator is not None:
        config["d_arch"] = "biggan-d"
        config["d_net"] = discriminator.net_config
        state.update({f"D.{k}": v.detach().float() for k, v in discriminator.net.state_dict().items()})
    return config, {"model": state}


register_source(
    OfficialSource(
        name="biggan-hf", load=_load_hf, presets=HF_PRESETS, to_genzoo=to_genzoo, guess_preset=hf_guess_preset
    )
)
register_source(OfficialSource(name="biggan-pytorch", load=_load_bp, presets=BP_PRESETS, to_genzoo=to_genzoo))
