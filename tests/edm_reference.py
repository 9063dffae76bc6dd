"""EDM's networks as NVlabs/edm ``training/networks.py`` documents them, written down independently of genzoo.

:func:`build_official` lays out the module tree an official constructor would build (class names,
constructor arguments, parameter and buffer names and shapes, attributes) as :class:`Node` objects with
random tensors; :func:`official_denoise` is a plain functional forward over those nodes in the official op
order, in float32 as the official code runs on a CPU; :func:`to_pickle_objects` turns the tree into
objects that pickle exactly as ``torch_utils.persistence`` writes them (see ``tests/nvlabs_fakes.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tests.nvlabs_fakes import module_dict, persistent_module


@dataclass
class Node:
    cls: str
    kwargs: dict[str, Any]
    params: dict[str, torch.Tensor | None] = field(default_factory=dict)
    buffers: dict[str, torch.Tensor | None] = field(default_factory=dict)
    children: dict[str, Any] = field(default_factory=dict)  # Node, or dict[str, Node] for a ModuleDict
    attrs: dict[str, Any] = field(default_factory=dict)


class Maker:
    def __init__(self, seed: int):
        self.g = torch.Generator().manual_seed(seed)

    def randn(self, *shape, scale=1.0):
        return torch.randn(*shape, generator=self.g) * scale


# ----------------------------------------------------------------------------- layers


def linear(mk, cin, cout, bias=True):
    return Node(
        "Linear",
        dict(in_features=cin, out_features=cout, bias=bias),
        params=dict(
            weight=mk.randn(cout, cin, scale=1 / math.sqrt(cin)),
            bias=mk.randn(cout, scale=0.1) if bias else None,
        ),
        attrs=dict(in_features=cin, out_features=cout),
    )


def conv(
    mk, cin, cout, kernel, bias=True, up=False, down=False, resample_filter=(1, 1), fused_resample=False
):
    f = torch.as_tensor(resample_filter, dtype=torch.float32)
    f = torch.outer(f, f)[None, None] / f.sum().square()
    fan = max(cin * kernel * kernel, 1)
    return Node(
        "Conv2d",
        dict(
            in_channels=cin,
            out_channels=cout,
            kernel=kernel,
            bias=bias,
            up=up,
            down=down,
            resample_filter=list(resample_filter),
            fused_resample=fused_resample,
        ),
        params=dict(
            weight=mk.randn(cout, cin, kernel, kernel, scale=1 / math.sqrt(fan)) if kernel else None,
            bias=mk.randn(cout, scale=0.1) if kernel and bias else None,
        ),
        buffers=dict(resample_filter=f if up or down else None),
        attrs=dict(in_channels=cin, out_channels=cout, up=up, down=down, fused_resample=fused_resample),
    )


def group_norm(mk, channels, eps=1e-5):
    return Node(
        "GroupNorm",
        dict(num_channels=channels, eps=eps),
        params=dict(weight=1 + mk.randn(channels, scale=0.1), bias=mk.randn(channels, scale=0.1)),
        attrs=dict(num_groups=min(32, channels // 4), eps=eps),
    )


def unet_block(
    mk,
    cin,
    cout,
    emb,
    up=False,
    down=False,
    attention=False,
    num_heads=None,
    channels_per_head=64,
    dropout=0.0,
    skip_scale=1.0,
    eps=1e-5,
    resample_filter=(1, 1),
    resample_proj=False,
    adaptive_scale=True,
):
    heads = 0 if not attention else num_heads if num_heads is not None else cout // channels_per_head
    node = Node(
        "UNetBlock",
        dict(
            in_channels=cin,
            out_channels=cout,
            emb_channels=emb,
            up=up,
            down=down,
            attention=attention,
            num_heads=num_heads,
            channels_per_head=channels_per_head,
            dropout=dropout,
            skip_scale=skip_scale,
            eps=eps,
            resample_filter=list(resample_filter),
            resample_proj=resample_proj,
            adaptive_scale=adaptive_scale,
        ),
        attrs=dict(
            in_channels=cin,
            out_channels=cout,
            emb_channels=emb,
            num_heads=heads,
            dropout=dropout,
            skip_scale=skip_scale,
            adaptive_scale=adaptive_scale,
        ),
    )
    c = node.children
    c["norm0"] = group_norm(mk, cin, eps)
    c["conv0"] = conv(mk, cin, cout, 3, up=up, down=down, resample_filter=resample_filter)
    c["affine"] = linear(mk, emb, cout * (2 if adaptive_scale else 1))
    c["norm1"] = group_norm(mk, cout, eps)
    c["conv1"] = conv(mk, cout, cout, 3)
    if cout != cin or up or down:
        kernel = 1 if resample_proj or cout != cin else 0
        c["skip"] = conv(mk, cin, cout, kernel, up=up, down=down, resample_filter=resample_filter)
    if heads:
        c["norm2"] = group_norm(mk, cout, eps)
        c["qkv"] = conv(mk, cout, cout * 3, 1)
        c["proj"] = conv(mk, cout, cout, 1)
    return node


# ----------------------------------------------------------------------------- networks


def _encoder_blocks(mk, enc, res, cout, width, num_blocks, attention, emb, blk):
    """The ``num_blocks`` blocks of one encoder resolution (both UNets); returns the channels out."""
    for idx in range(num_blocks):
        cin, cout = cout, width
        enc[f"{res}x{res}_block{idx}"] = unet_block(mk, cin, cout, emb, attention=attention, **blk)
    return cout


def _decoder_level(mk, dec, res, lowest, cout, width, skips, num_blocks, attention, emb, blk):
    """One decoder resolution (both UNets): the two middle blocks at the lowest resolution or the
    upsampling block, then ``num_blocks + 1`` blocks taking a skip each (those indexed in ``attention``
    with self-attention); returns the channels out."""
    if lowest:
        dec[f"{res}x{res}_in0"] = unet_block(mk, cout, cout, emb, attention=True, **blk)
        dec[f"{res}x{res}_in1"] = unet_block(mk, cout, cout, emb, **blk)
    else:
        dec[f"{res}x{res}_up"] = unet_block(mk, cout, cout, emb, up=True, **blk)
    for idx in range(num_blocks + 1):
        cin, cout = cout + skips.pop(), width
        dec[f"{res}x{res}_block{idx}"] = unet_block(mk, cin, cout, emb, attention=idx in attention, **blk)
    return cout


def song_unet(
    mk,
    img_resolution,
    in_channels,
    out_channels,
    label_dim=0,
    augment_dim=0,
    model_channels=128,
    channel_mult=(1, 2, 2, 2),
    channel_mult_emb=4,
    num_blocks=4,
    attn_resolutions=(16,),
    dropout=0.1,
    label_dropout=0,
    embedding_type="positional",
    channel_mult_noise=1,
    encoder_type="standard",
    decoder_type="standard",
    resample_filter=(1, 1),
):
    kwargs = dict(locals())
    kwargs.pop("mk")
    emb = model_channels * channel_mult_emb
    noise = model_channels * channel_mult_noise
    blk = dict(
        num_heads=1,
        dropout=dropout,
        skip_scale=np.sqrt(0.5),
        eps=1e-6,
        resample_filter=resample_filter,
        resample_proj=True,
        adaptive_scale=False,
    )
    net = Node("SongUNet", kwargs, attrs=dict(label_dropout=label_dropout))
    c = net.children
    if embedding_type == "positional":
        c["map_noise"] = Node(
            "PositionalEmbedding",
            dict(num_channels=noise, endpoint=True),
            attrs=dict(num_channels=noise, max_positions=10000, endpoint=True),
        )
    else:
        c["map_noise"] = Node(
            "FourierEmbedding", dict(num_channels=noise), buffers=dict(freqs=mk.randn(noise // 2, scale=16))
        )
    c["map_label"] = linear(mk, label_dim, noise) if label_dim else None
    c["map_augment"] = linear(mk, augment_dim, noise, bias=False) if augment_dim else None
    c["map_layer0"] = linear(mk, noise, emb)
    c["map_layer1"] = linear(mk, emb, emb)
    enc, dec = {}, {}
    cout = caux = in_channels
    for level, mult in enumerate(channel_mult):
        res = img_resolution >> level
        if level == 0:
            cin, cout = cout, model_channels
            enc[f"{res}x{res}_conv"] = conv(mk, cin, cout, 3)
        else:
            enc[f"{res}x{res}_down"] = unet_block(mk, cout, cout, emb, down=True, **blk)
            if encoder_type == "skip":
                enc[f"{res}x{res}_aux_down"] = conv(
                    mk, caux, caux, 0, down=True, resample_filter=resample_filter
                )
                enc[f"{res}x{res}_aux_skip"] = conv(mk, caux, cout, 1)
            if encoder_type == "residual":
                enc[f"{res}x{res}_aux_residual"] = conv(
                    mk, caux, cout, 3, down=True, resample_filter=resample_filter, fused_resample=True
                )
                caux = cout
        cout = _encoder_blocks(mk, enc, res, cout, model_channels * mult, num_blocks,
                               res in attn_resolutions, emb, blk)
    skips = [n.kwargs["out_channels"] for name, n in enc.items() if "aux" not in name]
    for level, mult in reversed(list(enumerate(channel_mult))):
        res = img_resolution >> level
        attention = (num_blocks,) if res in attn_resolutions else ()  # the last block of a level only
        cout = _decoder_level(mk, dec, res, level == len(channel_mult) - 1, cout, model_channels * mult,
                              skips, num_blocks, attention, emb, blk)
        if decoder_type == "skip" or level == 0:
            if decoder_type == "skip" and level < len(channel_mult) - 1:
                dec[f"{res}x{res}_aux_up"] = conv(
                    mk, out_channels, out_channels, 0, up=True, resample_filter=resample_filter
                )
            dec[f"{res}x{res}_aux_norm"] = group_norm(mk, cout, eps=1e-6)
            dec[f"{res}x{res}_aux_conv"] = conv(mk, cout, out_channels, 3)
    c["enc"], c["dec"] = enc, dec
    return net


def dhariwal_unet(
    mk,
    img_resolution,
    in_channels,
    out_channels,
    label_dim=0,
    augment_dim=0,
    model_channels=192,
    channel_mult=(1, 2, 3, 4),
    channel_mult_emb=4,
    num_blocks=3,
    attn_resolutions=(32, 16, 8),
    dropout=0.1,
    label_dropout=0,
):
    kwargs = dict(locals())
    kwargs.pop("mk")
    emb = model_channels * channel_mult_emb
    blk = dict(channels_per_head=64, dropout=dropout)
    net = Node("DhariwalUNet", kwargs, attrs=dict(label_dropout=label_dropout))
    c = net.children
    c["map_noise"] = Node(
        "PositionalEmbedding",
        dict(num_channels=model_channels),
        attrs=dict(num_channels=model_channels, max_positions=10000, endpoint=False),
    )
    c["map_augment"] = linear(mk, augment_dim, model_channels, bias=False) if augment_dim else None
    c["map_layer0"] = linear(mk, model_channels, emb)
    c["map_layer1"] = linear(mk, emb, emb)
    c["map_label"] = linear(mk, label_dim, emb, bias=False) if label_dim else None
    enc, dec = {}, {}
    cout = in_channels
    for level, mult in enumerate(channel_mult):
        res = img_resolution >> level
        if level == 0:
            cin, cout = cout, model_channels * mult
            enc[f"{res}x{res}_conv"] = conv(mk, cin, cout, 3)
        else:
            enc[f"{res}x{res}_down"] = unet_block(mk, cout, cout, emb, down=True, **blk)
        cout = _encoder_blocks(mk, enc, res, cout, model_channels * mult, num_blocks,
                               res in attn_resolutions, emb, blk)
    skips = [n.kwargs["out_channels"] for n in enc.values()]
    for level, mult in reversed(list(enumerate(channel_mult))):
        res = img_resolution >> level
        attention = range(num_blocks + 1) if res in attn_resolutions else ()
        cout = _decoder_level(mk, dec, res, level == len(channel_mult) - 1, cout, model_channels * mult,
                              skips, num_blocks, attention, emb, blk)
    c["enc"], c["dec"] = enc, dec
    c["out_norm"] = group_norm(mk, cout)
    c["out_conv"] = conv(mk, cout, out_channels, 3)
    return net


PRECOND_ARGS = {
    "VPPrecond": dict(beta_d=19.9, beta_min=0.1, M=1000, epsilon_t=1e-5),
    "VEPrecond": dict(sigma_min=0.02, sigma_max=100),
    "iDDPMPrecond": dict(C_1=0.001, C_2=0.008, M=1000),
    "EDMPrecond": dict(sigma_min=0, sigma_max=float("inf"), sigma_data=0.5),
}


def iddpm_u(M=1000, C_1=0.001, C_2=0.008):
    """iDDPMPrecond's grid, computed in float32 as the official constructor does."""

    def alpha_bar(j):
        return (0.5 * np.pi * torch.as_tensor(j) / M / (C_2 + 1)).sin() ** 2

    u = torch.zeros(M + 1)
    for j in range(M, 0, -1):
        u[j - 1] = ((u[j] ** 2 + 1) / (alpha_bar(j - 1) / alpha_bar(j)).clip(min=C_1) - 1).sqrt()
    return u


def vp_sigma32(t, beta_d=19.9, beta_min=0.1):
    t = torch.as_tensor(t)
    return ((0.5 * beta_d * (t**2) + beta_min * t).exp() - 1).sqrt()


def build_official(
    precond: str,
    model_type: str,
    img_resolution: int,
    img_channels: int,
    label_dim: int = 0,
    use_fp16: bool = False,
    seed: int = 0,
    **model_kwargs,
) -> Node:
    """The ``ema`` object of an official snapshot: ``<precond>(img_resolution, ..., **kwargs)``."""
    mk = Maker(seed)
    args = dict(PRECOND_ARGS[precond])
    kwargs = dict(
        img_resolution=img_resolution,
        img_channels=img_channels,
        label_dim=label_dim,
        use_fp16=use_fp16,
        model_type=model_type,
        **model_kwargs,
    )
    out = img_channels * (2 if precond == "iDDPMPrecond" else 1)
    builder = song_unet if model_type == "SongUNet" else dhariwal_unet
    model = builder(
        mk,
        img_resolution=img_resolution,
        in_channels=img_channels,
        out_channels=out,
        label_dim=label_dim,
        **model_kwargs,
    )
    attrs = dict(
        img_resolution=img_resolution,
        img_channels=img_channels,
        label_dim=label_dim,
        use_fp16=use_fp16,
        **args,
    )
    model.kwargs = dict(
        img_resolution=img_resolution,
        in_channels=img_channels,
        out_channels=out,
        label_dim=label_dim,
        **model_kwargs,
    )  # as passed: the decorator records no defaults
    node = Node(precond, kwargs, children=dict(model=model), attrs=attrs)
    if precond == "VPPrecond":
        attrs.update(sigma_min=float(vp_sigma32(args["epsilon_t"])), sigma_max=float(vp_sigma32(1)))
    if precond == "iDDPMPrecond":
        node.buffers["u"] = iddpm_u()
        attrs.update(sigma_min=float(node.buffers["u"][999]), sigma_max=float(node.buffers["u"][0]))
    return node


# ----------------------------------------------------------------------------- the official forward


def f_linear(n, x):
    x = x @ n.params["weight"].t()
    return x + n.params["bias"] if n.params.get("bias") is not None else x


def f_conv(n, x):
    w, b, f = n.params.get("weight"), n.params.get("bias"), n.buffers.get("resample_filter")
    cin, cout = n.kwargs["in_channels"], n.kwargs["out_channels"]
    w_pad = w.shape[-1] // 2 if w is not None else 0
    f_pad = (f.shape[-1] - 1) // 2 if f is not None else 0
    up, down, fused = n.kwargs["up"], n.kwargs["down"], n.kwargs["fused_resample"]
    if fused and up and w is not None:
        x = F.conv_transpose2d(x, f.mul(4).tile([cin, 1, 1, 1]), groups=cin, stride=2, padding=w_pad + f_pad)
        x = F.conv2d(x, w)
    elif fused and down and w is not None:
        x = F.conv2d(x, w, padding=w_pad + f_pad)
        x = F.conv2d(x, f.tile([cout, 1, 1, 1]), groups=cout, stride=2)
    else:
        if up:
            x = F.conv_transpose2d(x, f.mul(4).tile([cin, 1, 1, 1]), groups=cin, stride=2, padding=f_pad)
        if down:
            x = F.conv2d(x, f.tile([cin, 1, 1, 1]), groups=cin, stride=2, padding=f_pad)
        if w is not None:
            x = F.conv2d(x, w, padding=w_pad)
    return x + b.reshape(1, -1, 1, 1) if b is not None else x


def f_norm(n, x):
    return F.group_norm(x, n.attrs["num_groups"], n.params["weight"], n.params["bias"], n.attrs["eps"])


def f_block(n, x, emb):
    c, heads, scale = n.children, n.attrs["num_heads"], n.attrs["skip_scale"]
    orig = x
    x = f_conv(c["conv0"], F.silu(f_norm(c["norm0"], x)))
    params = f_linear(c["affine"], emb)[:, :, None, None]
    if n.attrs["adaptive_scale"]:
        s, b = params.chunk(2, dim=1)
        x = F.silu(b + f_norm(c["norm1"], x) * (s + 1))
    else:
        x = F.silu(f_norm(c["norm1"], x + params))
    x = f_conv(c["conv1"], x)
    x = (x + (f_conv(c["skip"], orig) if "skip" in c else orig)) * scale
    if heads:
        q, k, v = (
            f_conv(c["qkv"], f_norm(c["norm2"], x))
            .reshape(x.shape[0] * heads, x.shape[1] // heads, 3, -1)
            .unbind(2)
        )
        w = torch.einsum("ncq,nck->nqk", q, k / np.sqrt(k.shape[1])).softmax(dim=2)
        a = torch.einsum("nqk,nck->ncq", w, v)
        x = (f_conv(c["proj"], a.reshape(*x.shape)) + x) * scale
    return x


def f_positional(n, x):
    ch = n.attrs["num_channels"]
    freqs = torch.arange(0, ch // 2, dtype=torch.float32) / (ch // 2 - (1 if n.attrs["endpoint"] else 0))
    x = torch.outer(x, (1 / n.attrs["max_positions"]) ** freqs)
    return torch.cat([x.cos(), x.sin()], dim=1)


def f_noise(n, x):
    if n.cls == "PositionalEmbedding":
        return f_positional(n, x)
    x = torch.outer(x, 2 * np.pi * n.buffers["freqs"])
    return torch.cat([x.cos(), x.sin()], dim=1)


def f_song(n, x, noise, labels, augment=None):
    c = n.children
    emb = f_noise(c["map_noise"], noise)
    emb = emb.reshape(emb.shape[0], 2, -1).flip(1).reshape(*emb.shape)
    if c["map_label"] is not None:
        emb = emb + f_linear(c["map_label"], labels * np.sqrt(c["map_label"].attrs["in_features"]))
    if c["map_augment"] is not None and augment is not None:
        emb = emb + f_linear(c["map_augment"], augment)
    emb = F.silu(f_linear(c["map_layer1"], F.silu(f_linear(c["map_layer0"], emb))))
    skips, aux = [], x
    for name, b in c["enc"].items():
        if "aux_down" in name:
            aux = f_conv(b, aux)
        elif "aux_skip" in name:
            x = skips[-1] = x + f_conv(b, aux)
        elif "aux_residual" in name:
            x = skips[-1] = aux = (x + f_conv(b, aux)) / np.sqrt(2)
        else:
            x = f_block(b, x, emb) if b.cls == "UNetBlock" else f_conv(b, x)
            skips.append(x)
    aux = tmp = None
    for name, b in c["dec"].items():
        if "aux_up" in name:
            aux = f_conv(b, aux)
        elif "aux_norm" in name:
            tmp = f_norm(b, x)
        elif "aux_conv" in name:
            tmp = f_conv(b, F.silu(tmp))
            aux = tmp if aux is None else tmp + aux
        else:
            if x.shape[1] != b.kwargs["in_channels"]:
                x = torch.cat([x, skips.pop()], dim=1)
            x = f_block(b, x, emb)
    return aux


def f_dhariwal(n, x, noise, labels, augment=None):
    c = n.children
    emb = f_noise(c["map_noise"], noise)
    if c["map_augment"] is not None and augment is not None:
        emb = emb + f_linear(c["map_augment"], augment)
    emb = f_linear(c["map_layer1"], F.silu(f_linear(c["map_layer0"], emb)))
    if c["map_label"] is not None:
        emb = emb + f_linear(c["map_label"], labels)
    emb = F.silu(emb)
    skips = []
    for b in c["enc"].values():
        x = f_block(b, x, emb) if b.cls == "UNetBlock" else f_conv(b, x)
        skips.append(x)
    for b in c["dec"].values():
        if x.shape[1] != b.kwargs["in_channels"]:
            x = torch.cat([x, skips.pop()], dim=1)
        x = f_block(b, x, emb)
    return f_conv(c["out_conv"], F.silu(f_norm(c["out_norm"], x)))


@torch.no_grad()
def official_denoise(node: Node, x, sigma, class_labels=None, augment_labels=None):
    """``<Precond>.forward(x, sigma, class_labels)`` with one-hot float labels (or None), in float32."""
    a = node.attrs
    x = x.to(torch.float32)
    sigma = torch.as_tensor(sigma).to(torch.float32).reshape(-1, 1, 1, 1)
    label_dim = a["label_dim"]
    labels = (
        None
        if label_dim == 0
        else (
            torch.zeros([1, label_dim])
            if class_labels is None
            else class_labels.to(torch.float32).reshape(-1, label_dim)
        )
    )
    if node.cls == "VPPrecond":
        c_skip, c_out, c_in = 1, -sigma, 1 / (sigma**2 + 1).sqrt()
        t = ((a["beta_min"] ** 2 + 2 * a["beta_d"] * (1 + sigma**2).log()).sqrt() - a["beta_min"]) / a[
            "beta_d"
        ]
        c_noise = (a["M"] - 1) * t
    elif node.cls == "VEPrecond":
        c_skip, c_out, c_in, c_noise = 1, sigma, 1, (0.5 * sigma).log()
    elif node.cls == "iDDPMPrecond":
        c_skip, c_out, c_in = 1, -sigma, 1 / (sigma**2 + 1).sqrt()
        u = node.buffers["u"]
        index = torch.cdist(sigma.reshape(1, -1, 1), u.reshape(1, -1, 1)).argmin(2).reshape(sigma.shape)
        c_noise = a["M"] - 1 - index.to(torch.float32)
    else:
        sd = a["sigma_data"]
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
        c_in = 1 / (sd**2 + sigma**2).sqrt()
        c_noise = sigma.log() / 4
    model = node.children["model"]
    forward = f_song if model.cls == "SongUNet" else f_dhariwal
    if labels is not None and labels.shape[0] == 1 and x.shape[0] > 1:
        labels = labels.expand(x.shape[0], -1)
    F_x = forward(model, c_in * x, c_noise.flatten(), labels, augment_labels)
    return c_skip * x + c_out * F_x[:, : a["img_channels"]]


# ----------------------------------------------------------------------------- pickling


def to_pickle_objects(node: Node):
    """The tree as persistent stand-ins, ModuleDicts as real ``torch.nn.ModuleDict`` containers."""
    modules = {}
    for name, child in node.children.items():
        if child is None:
            modules[name] = None
        elif isinstance(child, dict):
            modules[name] = module_dict({k: to_pickle_objects(v) for k, v in child.items()})
        else:
            modules[name] = to_pickle_objects(child)
    return persistent_module(
        node.cls, dict(node.kwargs), params=node.params, buffers=node.buffers, modules=modules, **node.attrs
    )
