"""EDM2's network as documented (Karras et al. 2024, Fig. 21; NVlabs/edm2 ``training/networks_edm2.py``'s
structure and key names), written here independently of genzoo.nets.edm2: the official state-dict layout,
a functional float64 forward over a state dict, and official-layout snapshot pickles built from it.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F

from tests.nvlabs_fakes import EasyDict, FakePersistent, module_dict, persistent_module, write_snapshot

TINY = dict(img_resolution=8, img_channels=3, label_dim=5, model_channels=8, channel_mult=[1, 2],
            num_blocks=1, attn_resolutions=[4], channels_per_head=8, logvar_channels=8)


def _cfg(cfg):
    c = dict(channel_mult_noise=None, channel_mult_emb=None, label_balance=0.5, concat_balance=0.5,
             res_balance=0.3, attn_balance=0.3, clip_act=256, channels_per_head=64, logvar_channels=128)
    c.update(cfg)
    return c


def block_plan(cfg):
    """Encoder and decoder blocks in order: (name, flavor, cin, cout, resample, attention)."""
    c = _cfg(cfg)
    cb = [c["model_channels"] * m for m in c["channel_mult"]]
    enc, dec = [], []
    cout = c["img_channels"] + 1
    for level, ch in enumerate(cb):
        res = c["img_resolution"] >> level
        if level == 0:
            enc.append((f"{res}x{res}_conv", "conv", cout, ch, "keep", False))
            cout = ch
        else:
            enc.append((f"{res}x{res}_down", "enc", cout, cout, "down", False))
        for i in range(c["num_blocks"]):
            enc.append((f"{res}x{res}_block{i}", "enc", cout, ch, "keep", res in c["attn_resolutions"]))
            cout = ch
    skips = [e[3] for e in enc]
    for level in reversed(range(len(cb))):
        res = c["img_resolution"] >> level
        if level == len(cb) - 1:
            dec.append((f"{res}x{res}_in0", "dec", cout, cout, "keep", True))
            dec.append((f"{res}x{res}_in1", "dec", cout, cout, "keep", False))
        else:
            dec.append((f"{res}x{res}_up", "dec", cout, cout, "up", False))
        for i in range(c["num_blocks"] + 1):
            cin = cout + skips.pop()
            dec.append((f"{res}x{res}_block{i}", "dec", cin, cb[level], "keep", res in c["attn_resolutions"]))
            cout = cb[level]
    return enc, dec, cb


def official_state(cfg, seed=0, dtype=torch.float16):
    """A random state dict of the official Precond (as a snapshot stores it: float16), gains non-zero."""
    c = _cfg(cfg)
    g = torch.Generator().manual_seed(seed)
    enc, dec, cb = block_plan(c)
    cnoise = c["model_channels"] * (c["channel_mult_noise"] or c["channel_mult"][0])
    cemb = c["model_channels"] * (c["channel_mult_emb"] or max(c["channel_mult"]))
    s = OrderedDict()

    def w(*shape):
        return torch.randn(*shape, generator=g)

    s["unet.out_gain"] = w([]) + 1
    s["unet.emb_fourier.freqs"] = 2 * math.pi * w(cnoise)
    s["unet.emb_fourier.phases"] = 2 * math.pi * torch.rand(cnoise, generator=g)
    s["unet.emb_noise.weight"] = w(cemb, cnoise)
    if c["label_dim"]:
        s["unet.emb_label.weight"] = w(cemb, c["label_dim"])
    for part, blocks in (("enc", enc), ("dec", dec)):
        for name, flavor, cin, cout, _, attention in blocks:
            p = f"unet.{part}.{name}"
            if flavor == "conv":
                s[f"{p}.weight"] = w(cout, cin, 3, 3)
                continue
            s[f"{p}.emb_gain"] = w([])
            s[f"{p}.conv_res0.weight"] = w(cout, cout if flavor == "enc" else cin, 3, 3)
            s[f"{p}.emb_linear.weight"] = w(cout, cemb)
            s[f"{p}.conv_res1.weight"] = w(cout, cout, 3, 3)
            if cin != cout:
                s[f"{p}.conv_skip.weight"] = w(cout, cin, 1, 1)
            if attention:
                s[f"{p}.attn_qkv.weight"] = w(cout * 3, cout, 1, 1)
                s[f"{p}.attn_proj.weight"] = w(cout, cout, 1, 1)
    s["unet.out_conv.weight"] = w(c["img_channels"], cb[0], 3, 3)
    s["logvar_fourier.freqs"] = 2 * math.pi * w(c["logvar_channels"])
    s["logvar_fourier.phases"] = 2 * math.pi * torch.rand(c["logvar_channels"], generator=g)
    s["logvar_linear.weight"] = w(1, c["logvar_channels"])
    return OrderedDict((k, v.to(dtype)) for k, v in s.items())


# ----------------------------------------------------------------------------- functional forward (float64)


def _normalize(x, dims, eps=1e-4):
    """x / (eps + ‖x‖/√n) over dims (n = the number of elements normalised together)."""
    n = math.prod(x.shape[d] for d in dims)
    return x / (eps + x.square().sum(dim=dims, keepdim=True).sqrt() / math.sqrt(n))


def _mpconv(x, weight, gain=1.0):
    w = weight.double()
    w = _normalize(w, list(range(1, w.ndim))) * (gain / math.sqrt(w[0].numel()))
    if w.ndim == 2:
        return x @ w.t()
    return F.conv2d(x, w, padding=w.shape[-1] // 2)


def _silu(x):
    return x * torch.sigmoid(x) / 0.596


def _sum(a, b, t):
    return ((1 - t) * a + t * b) / math.sqrt((1 - t) ** 2 + t ** 2)


def _fourier(x, freqs, phases):
    return math.sqrt(2) * torch.cos(x.double()[:, None] * freqs.double()[None] + phases.double()[None])


def _block(s, p, x, emb, flavor, resample, attention, c):
    if resample == "down":
        n, ch, h, w_ = x.shape
        x = x.reshape(n, ch, h // 2, 2, w_ // 2, 2).mean(dim=(3, 5))
    elif resample == "up":
        x = x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    skip = s.get(f"{p}.conv_skip.weight")
    if flavor == "enc":
        if skip is not None:
            x = _mpconv(x, skip)
        x = _normalize(x, [1])
    y = _mpconv(_silu(x), s[f"{p}.conv_res0.weight"])
    scale = _mpconv(emb, s[f"{p}.emb_linear.weight"], gain=float(s[f"{p}.emb_gain"])) + 1
    y = _mpconv(_silu(y * scale[:, :, None, None]), s[f"{p}.conv_res1.weight"])
    if flavor == "dec" and skip is not None:
        x = _mpconv(x, skip)
    x = _sum(x, y, c["res_balance"])
    if attention:
        n, ch, h, w_ = x.shape
        heads = ch // c["channels_per_head"]
        qkv = _mpconv(x, s[f"{p}.attn_qkv.weight"]).reshape(n, heads, ch // heads, 3, h * w_)
        qkv = _normalize(qkv, [2])
        q, k, v = qkv[:, :, :, 0], qkv[:, :, :, 1], qkv[:, :, :, 2]
        logits = torch.einsum("nhcq,nhck->nhqk", q, k) / math.sqrt(ch // heads)
        weights = torch.exp(logits - logits.amax(dim=3, keepdim=True))
        weights = weights / weights.sum(dim=3, keepdim=True)
        a = torch.einsum("nhqk,nhck->nhcq", weights, v).reshape(n, ch, h, w_)
        x = _sum(x, _mpconv(a, s[f"{p}.attn_proj.weight"]), c["attn_balance"])
    return x.clamp(-c["clip_act"], c["clip_act"])


def reference_precond(state, cfg, x, sigma, one_hot=None, return_logvar=False):
    """EDM2's Precond(x, σ, one-hot labels or None) in float64 from the official state dict."""
    c = _cfg(cfg)
    s = {k: v.double() for k, v in state.items()}
    x = x.double()
    sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1, 1, 1).expand(x.shape[0], 1, 1, 1)
    sd = 0.5
    c_skip = sd ** 2 / (sigma ** 2 + sd ** 2)
    c_out = sigma * sd / (sigma ** 2 + sd ** 2).sqrt()
    c_in = 1 / (sigma ** 2 + sd ** 2).sqrt()
    c_noise = sigma.flatten().log() / 4

    emb = _mpconv(_fourier(c_noise, s["unet.emb_fourier.freqs"], s["unet.emb_fourier.phases"]),
                  s["unet.emb_noise.weight"])
    if c["label_dim"]:
        labels = torch.zeros(1, c["label_dim"], dtype=torch.float64) if one_hot is None else one_hot.double()
        emb = _sum(emb, _mpconv(labels * math.sqrt(c["label_dim"]), s["unet.emb_label.weight"]),
                   c["label_balance"])
    emb = _silu(emb)
    enc, dec, _ = block_plan(c)
    h = c_in * x
    h = torch.cat([h, torch.ones_like(h[:, :1])], dim=1)
    skips = []
    for name, flavor, _, _, resample, attention in enc:
        p = f"unet.enc.{name}"
        h = _mpconv(h, s[f"{p}.weight"]) if flavor == "conv" else _block(s, p, h, emb, flavor, resample,
                                                                          attention, c)
        skips.append(h)
    for name, flavor, _, _, resample, attention in dec:
        if "block" in name:
            b = skips.pop()
            na, nb, t = h.shape[1], b.shape[1], c["concat_balance"]
            scale = math.sqrt((na + nb) / ((1 - t) ** 2 + t ** 2))
            h = torch.cat([h * scale / math.sqrt(na) * (1 - t), b * scale / math.sqrt(nb) * t], dim=1)
        h = _block(s, f"unet.dec.{name}", h, emb, flavor, resample, attention, c)
    F_x = _mpconv(h, s["unet.out_conv.weight"], gain=float(s["unet.out_gain"]))
    D = c_skip * x + c_out * F_x
    if not return_logvar:
        return D
    u = _mpconv(_fourier(c_noise, s["logvar_fourier.freqs"], s["logvar_fourier.phases"]),
                s["logvar_linear.weight"]).reshape(-1, 1, 1, 1)
    return D, u


# ----------------------------------------------------------------------------- official snapshot pickles


def _mpconv_record(weight):
    return persistent_module("MPConv", dict(), params=dict(weight=weight), out_channels=weight.shape[0])


def _fourier_record(freqs, phases):
    return persistent_module("MPFourier", dict(num_channels=freqs.shape[0]),
                             buffers=dict(freqs=freqs, phases=phases))


def _block_record(state, p, flavor, cin, cout, resample, attention, cemb, c):
    mods = OrderedDict(conv_res0=_mpconv_record(state[f"{p}.conv_res0.weight"]),
                       emb_linear=_mpconv_record(state[f"{p}.emb_linear.weight"]),
                       conv_res1=_mpconv_record(state[f"{p}.conv_res1.weight"]))
    attrs = {}
    for name in ("conv_skip", "attn_qkv", "attn_proj"):
        if f"{p}.{name}.weight" in state:
            mods[name] = _mpconv_record(state[f"{p}.{name}.weight"])
        else:
            attrs[name] = None  # an attribute set to None, as the official constructor leaves it
    kwargs = dict(flavor=flavor, resample_mode=resample, attention=attention,
                  channels_per_head=c["channels_per_head"])
    rec = persistent_module("Block", kwargs, params=dict(emb_gain=state[f"{p}.emb_gain"]), modules=mods,
                            out_channels=cout, flavor=flavor, resample_filter=[1, 1], resample_mode=resample,
                            num_heads=cout // c["channels_per_head"] if attention else 0, dropout=0,
                            res_balance=c["res_balance"], attn_balance=c["attn_balance"],
                            clip_act=c["clip_act"], **attrs)
    rec.state["_init_args"] = (cin, cout, cemb)  # Block(in_channels, out_channels, emb_channels, ...)
    return rec


def precond_record(state, cfg, use_fp16=True):
    """The official ``Precond`` as a persistence record (constructor kwargs as the training loop passes)."""
    c = _cfg(cfg)
    enc, dec, _ = block_plan(c)
    cemb = c["model_channels"] * (c["channel_mult_emb"] or max(c["channel_mult"]))
    enc_d, dec_d = {}, {}
    for part, blocks, out in (("enc", enc, enc_d), ("dec", dec, dec_d)):
        for name, flavor, cin, cout, resample, attention in blocks:
            p = f"unet.{part}.{name}"
            out[name] = (_mpconv_record(state[f"{p}.weight"]) if flavor == "conv" else
                         _block_record(state, p, flavor, cin, cout, resample, attention, cemb, c))
    unet_mods = OrderedDict(emb_fourier=_fourier_record(state["unet.emb_fourier.freqs"],
                                                        state["unet.emb_fourier.phases"]),
                            emb_noise=_mpconv_record(state["unet.emb_noise.weight"]))
    extra = {}
    if c["label_dim"]:
        unet_mods["emb_label"] = _mpconv_record(state["unet.emb_label.weight"])
    else:
        extra["emb_label"] = None
    unet_mods.update(enc=module_dict(enc_d), dec=module_dict(dec_d),
                     out_conv=_mpconv_record(state["unet.out_conv.weight"]))
    interface_keys = ("img_resolution", "img_channels", "label_dim", "logvar_channels")
    unet_kwargs = {k: v for k, v in cfg.items() if k not in interface_keys}  # UNet and Block arguments
    interface = dict(img_resolution=c["img_resolution"], img_channels=c["img_channels"],
                     label_dim=c["label_dim"])
    unet = persistent_module("UNet", dict(interface, **unet_kwargs),
                             params=dict(out_gain=state["unet.out_gain"]), modules=unet_mods,
                             label_balance=c["label_balance"], concat_balance=c["concat_balance"], **extra)
    precond_kwargs = dict(interface, use_fp16=use_fp16, logvar_channels=c["logvar_channels"], **unet_kwargs)
    return persistent_module(
        "Precond", precond_kwargs,
        modules=OrderedDict(unet=unet, logvar_fourier=_fourier_record(state["logvar_fourier.freqs"],
                                                                      state["logvar_fourier.phases"]),
                            logvar_linear=_mpconv_record(state["logvar_linear.weight"])),
        sigma_data=0.5, use_fp16=use_fp16, **interface)


def encoder_record(latent):
    """The snapshot's encoder as the official code pickles it (state = __dict__ with _vae None)."""
    if not latent:
        return FakePersistent("StandardRGBEncoder", {})
    raw_mean, raw_std = [5.81, 3.25, 0.12, -2.15], [4.17, 4.62, 3.71, 3.28]
    scale = np.float32(0.5) / np.float32(raw_std)
    bias = np.float32(0) - np.float32(raw_mean) * scale
    return FakePersistent("StabilityVAEEncoder", dict(vae_name="stabilityai/sd-vae-ft-mse", scale=scale,
                                                      bias=bias, batch_size=8, _vae=None))


def write_edm2_snapshot(path, cfg, state, latent=False):
    """``pickle.dump(EasyDict(encoder, dataset_kwargs, loss_fn, ema), f)`` as EDM2's training loop."""
    data = EasyDict(encoder=encoder_record(latent),
                    dataset_kwargs=EasyDict(class_name="training.dataset.ImageFolderDataset", path="x.zip"),
                    loss_fn=FakePersistent("EDM2Loss", dict(P_mean=-0.4, P_std=1.0, sigma_data=0.5)),
                    ema=precond_record(state, cfg))
    return write_snapshot(path, data)
