"""The ADM UNet, super-resolution UNet and noise-aware classifier against the public code's structure.

The structure rules of guided-diffusion's unet.py are written down here as a block plan (independent of
genzoo.nets.adm): they give the expected state-dict names and shapes, and a plain functional forward
(explicit softmax attention, F.group_norm, F.conv2d on the state dict) that the modules must match.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from genzoo import nets
from genzoo.nets.adm import ADMClassifier, ADMSuperRes, ADMUNet, qkv_attention


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors run fastest on one thread, and the machine is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- the public rules


def block_plan(image_size, ch, nrb, mult, attn_px, resblock_updown, in_ch=3):
    """[(block name, [(layer kind, cin, cout)]), ...] for input, middle and output blocks.

    Rules: one input conv at mult[0]·ch; per level nrb res blocks (+ attention when the current size is
    in attn_px), then a downsampler except at the last level; middle = res, attention, res; decoder levels
    reversed with nrb+1 res blocks each fed the concatenated skip, attention as in the encoder, an
    upsampler closing every level but the first.
    """
    plan = [("input_blocks.0", [("conv_in", in_ch, int(mult[0] * ch))])]
    skips = [int(mult[0] * ch)]
    cur, size, idx = int(mult[0] * ch), image_size, 1
    for level, m in enumerate(mult):
        for _ in range(nrb):
            layers = [("res", cur, int(m * ch))]
            cur = int(m * ch)
            if size in attn_px:
                layers.append(("attn", cur, cur))
            plan.append((f"input_blocks.{idx}", layers))
            skips.append(cur)
            idx += 1
        if level < len(mult) - 1:
            plan.append((f"input_blocks.{idx}", [("res_down" if resblock_updown else "down", cur, cur)]))
            skips.append(cur)
            idx += 1
            size //= 2
    plan.append(("middle_block", [("res", cur, cur), ("attn", cur, cur), ("res", cur, cur)]))
    idx = 0
    for level in reversed(range(len(mult))):
        for i in range(nrb + 1):
            out = int(mult[level] * ch)
            layers = [("res", cur + skips.pop(), out)]
            cur = out
            if size in attn_px:
                layers.append(("attn_up", cur, cur))
            if level and i == nrb:
                layers.append(("res_up" if resblock_updown else "up", cur, cur))
                size *= 2
            plan.append((f"output_blocks.{idx}", layers))
            idx += 1
    return plan, cur


def layer_shapes(prefix, kind, cin, cout, emb, scale_shift, conv2d=False):
    s = {}
    if kind == "conv_in":
        s[f"{prefix}.weight"], s[f"{prefix}.bias"] = (cout, cin, 3, 3), (cout,)
    elif kind == "down":
        s[f"{prefix}.op.weight"], s[f"{prefix}.op.bias"] = (cout, cin, 3, 3), (cout,)
    elif kind == "up":
        s[f"{prefix}.conv.weight"], s[f"{prefix}.conv.bias"] = (cout, cin, 3, 3), (cout,)
    elif kind.startswith("res"):
        s.update(
            {
                f"{prefix}.in_layers.0.weight": (cin,),
                f"{prefix}.in_layers.0.bias": (cin,),
                f"{prefix}.in_layers.2.weight": (cout, cin, 3, 3),
                f"{prefix}.in_layers.2.bias": (cout,),
                f"{prefix}.emb_layers.1.weight": ((2 if scale_shift else 1) * cout, emb),
                f"{prefix}.emb_layers.1.bias": ((2 if scale_shift else 1) * cout,),
                f"{prefix}.out_layers.0.weight": (cout,),
                f"{prefix}.out_layers.0.bias": (cout,),
                f"{prefix}.out_layers.3.weight": (cout, cout, 3, 3),
                f"{prefix}.out_layers.3.bias": (cout,),
            }
        )
        if cin != cout:
            s[f"{prefix}.skip_connection.weight"], s[f"{prefix}.skip_connection.bias"] = (
                (cout, cin, 1, 1),
                (cout,),
            )
    elif kind.startswith("attn"):
        k = (1, 1) if conv2d else (1,)
        s.update(
            {
                f"{prefix}.norm.weight": (cin,),
                f"{prefix}.norm.bias": (cin,),
                f"{prefix}.qkv.weight": (3 * cin, cin, *k),
                f"{prefix}.qkv.bias": (3 * cin,),
                f"{prefix}.proj_out.weight": (cin, cin, *k),
                f"{prefix}.proj_out.bias": (cin,),
            }
        )
    return s


def expected_unet_shapes(cfg, conv_in_channels=None, conv2d=False):
    ch, emb = cfg["num_channels"], 4 * cfg["num_channels"]
    plan, last = block_plan(
        cfg["image_size"],
        ch,
        cfg["num_res_blocks"],
        cfg["mult"],
        cfg["attn_px"],
        cfg["resblock_updown"],
        conv_in_channels or 3,
    )
    s = {
        "time_embed.0.weight": (emb, ch),
        "time_embed.0.bias": (emb,),
        "time_embed.2.weight": (emb, emb),
        "time_embed.2.bias": (emb,),
    }
    for name, layers in plan:
        for j, (kind, cin, cout) in enumerate(layers):
            s.update(layer_shapes(f"{name}.{j}", kind, cin, cout, emb, cfg["scale_shift"], conv2d))
    out = 6 if cfg["learn_sigma"] else 3
    s.update(
        {
            "out.0.weight": (last,),
            "out.0.bias": (last,),
            "out.2.weight": (out, int(cfg["mult"][0] * ch), 3, 3),
            "out.2.bias": (out,),
        }
    )
    if cfg.get("num_classes"):
        s["label_emb.weight"] = (cfg["num_classes"], emb)
    return s, plan


# ----------------------------------------------------------------------------- the reference forward


def ref_embedding(t, dim):
    half = dim // 2
    freqs = torch.tensor([math.exp(-math.log(10000.0) * i / half) for i in range(half)])
    args = t.double()[:, None] * freqs.double()[None]
    return torch.cat([args.cos(), args.sin()], dim=1).float()


def ref_attention(qkv, heads, new_order):
    """The reference computation: q and k scaled by d^(-1/4), explicit softmax in float32."""
    b, width, length = qkv.shape
    d = width // (3 * heads)
    if new_order:
        q, k, v = (u.reshape(b * heads, d, length) for u in qkv.chunk(3, dim=1))
    else:
        q, k, v = qkv.reshape(b * heads, 3 * d, length).split(d, dim=1)
    scale = 1 / math.sqrt(math.sqrt(d))
    w = torch.einsum("bct,bcs->bts", q * scale, k * scale)
    w = torch.softmax(w.float(), dim=-1).type(w.dtype)
    return torch.einsum("bts,bcs->bct", w, v).reshape(b, -1, length)


class RefNet:
    def __init__(self, sd, scale_shift, heads_fn, new_order, conv2d=False):
        self.sd, self.scale_shift, self.heads_fn, self.new_order, self.conv2d = (
            sd,
            scale_shift,
            heads_fn,
            new_order,
            conv2d,
        )

    def gn(self, h, p):
        return F.group_norm(h.float(), 32, self.sd[p + ".weight"], self.sd[p + ".bias"], eps=1e-5)

    def res(self, h, p, emb, resample=None):
        sd = self.sd
        a = F.silu(self.gn(h, p + ".in_layers.0"))
        if resample == "down":
            a, h = F.avg_pool2d(a, 2), F.avg_pool2d(h, 2)
        elif resample == "up":
            a, h = (
                F.interpolate(a, scale_factor=2.0, mode="nearest"),
                F.interpolate(h, scale_factor=2.0, mode="nearest"),
            )
        a = F.conv2d(a, sd[p + ".in_layers.2.weight"], sd[p + ".in_layers.2.bias"], padding=1)
        e = F.linear(F.silu(emb), sd[p + ".emb_layers.1.weight"], sd[p + ".emb_layers.1.bias"])[
            :, :, None, None
        ]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            a = self.gn(a, p + ".out_layers.0") * (1 + scale) + shift
        else:
            a = self.gn(a + e, p + ".out_layers.0")
        a = F.conv2d(F.silu(a), sd[p + ".out_layers.3.weight"], sd[p + ".out_layers.3.bias"], padding=1)
        if p + ".skip_connection.weight" in sd:
            h = F.conv2d(h, sd[p + ".skip_connection.weight"], sd[p + ".skip_connection.bias"])
        return h + a

    def attn(self, h, p, heads):
        b, c, hh, ww = h.shape
        wq, wp = self.sd[p + ".qkv.weight"], self.sd[p + ".proj_out.weight"]
        if self.conv2d:
            wq, wp = wq[..., 0], wp[..., 0]
        qkv = F.conv1d(self.gn(h, p + ".norm").reshape(b, c, -1), wq, self.sd[p + ".qkv.bias"])
        a = F.conv1d(ref_attention(qkv, heads, self.new_order), wp, self.sd[p + ".proj_out.bias"])
        return h + a.reshape(b, c, hh, ww)

    def layer(self, h, p, kind, emb, cout):
        if kind == "conv_in":
            return F.conv2d(h, self.sd[p + ".weight"], self.sd[p + ".bias"], padding=1)
        if kind == "down":
            return F.conv2d(h, self.sd[p + ".op.weight"], self.sd[p + ".op.bias"], stride=2, padding=1)
        if kind == "up":
            h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            return F.conv2d(h, self.sd[p + ".conv.weight"], self.sd[p + ".conv.bias"], padding=1)
        if kind.startswith("res"):
            return self.res(h, p, emb, {"res_down": "down", "res_up": "up"}.get(kind))
        return self.attn(h, p, self.heads_fn(cout, kind == "attn_up"))

    def emb(self, t, ch, y=None):
        sd = self.sd
        e = F.linear(ref_embedding(t, ch), sd["time_embed.0.weight"], sd["time_embed.0.bias"])
        e = F.linear(F.silu(e), sd["time_embed.2.weight"], sd["time_embed.2.bias"])
        return e + sd["label_emb.weight"][y] if y is not None else e

    def unet(self, plan, x, t, ch, y=None):
        emb, h, skips = self.emb(t, ch, y), x, []
        for name, layers in plan:
            if name.startswith("output"):
                h = torch.cat([h, skips.pop()], dim=1)
            for j, (kind, _, cout) in enumerate(layers):
                h = self.layer(h, f"{name}.{j}", kind, emb, cout)
            if name.startswith("input"):
                skips.append(h)
        h = F.silu(self.gn(h, "out.0"))
        return F.conv2d(h, self.sd["out.2.weight"], self.sd["out.2.bias"], padding=1)


def randomize(module, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return module


# ----------------------------------------------------------------------------- the tests

TINY = dict(image_size=16, num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions="8")
CASES = {
    "legacy-heads": dict(
        num_heads=2,
        use_new_attention_order=False,
        resblock_updown=False,
        use_scale_shift_norm=False,
        learn_sigma=False,
        class_cond=False,
    ),
    "new-headch-updown": dict(
        num_head_channels=16,
        use_new_attention_order=True,
        resblock_updown=True,
        use_scale_shift_norm=True,
        learn_sigma=True,
        class_cond=True,
        num_classes=5,
    ),
    "legacy-updown-noss": dict(
        num_heads=4,
        num_heads_upsample=1,
        resblock_updown=True,
        use_scale_shift_norm=False,
        learn_sigma=True,
        class_cond=False,
    ),
    "new-scaleshift-cond": dict(
        num_head_channels=32,
        use_new_attention_order=True,
        resblock_updown=False,
        use_scale_shift_norm=True,
        learn_sigma=False,
        class_cond=True,
        num_classes=3,
    ),
}


def _cfg(flags):
    return dict(
        image_size=16,
        num_channels=32,
        num_res_blocks=1,
        mult=(1, 2),
        attn_px={8},
        resblock_updown=flags["resblock_updown"],
        scale_shift=flags["use_scale_shift_norm"],
        learn_sigma=flags["learn_sigma"],
        num_classes=flags.get("num_classes") if flags["class_cond"] else 0,
    )


def _heads_fn(flags):
    def heads(c, up):
        if flags.get("num_head_channels", -1) != -1:
            return c // flags["num_head_channels"]
        return (
            flags.get("num_heads_upsample", -1)
            if up and flags.get("num_heads_upsample", -1) != -1
            else flags["num_heads"]
        )

    return heads


@pytest.mark.parametrize("case", sorted(CASES))
def test_unet_keys_shapes_and_forward_match_public_rules(case):
    flags = CASES[case]
    model = randomize(ADMUNet(**TINY, **flags)).eval()
    expected, plan = expected_unet_shapes(_cfg(flags))
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([3, 917])
    y = torch.tensor([1, 2]) if flags["class_cond"] else None
    ref = RefNet(
        model.state_dict(),
        flags["use_scale_shift_norm"],
        _heads_fn(flags),
        flags.get("use_new_attention_order", False),
    ).unet(plan, x, t, 32, y)
    out = model(x, t, y)
    assert out.shape == (2, 6 if flags["learn_sigma"] else 3, 16, 16)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    # the genzoo network convention: (x, noise_labels, class_labels=...) is the same call
    torch.testing.assert_close(model(x, t.float(), class_labels=y), out)


def test_block_counts_follow_the_public_formula():
    for mult, nrb in (("1,2,3,4", 3), ("1,1,2,2,4,4", 2), ("1,2", 1)):
        model = ADMUNet(
            image_size=64, num_channels=32, num_res_blocks=nrb, channel_mult=mult, attention_resolutions="16"
        )
        levels = len(mult.split(","))
        assert len(model.input_blocks) == 1 + levels * nrb + (levels - 1)
        assert len(model.output_blocks) == levels * (nrb + 1)


def test_released_configurations_have_the_published_parameter_counts():
    """ADM paper: 296M (64 px), 422M (128), 554M (256), 559M (512); iDDPM CIFAR-10 "50M", IN-64 "270M"."""
    from genzoo.checkpoints.guided_diffusion import (
        GUIDED_PRESETS,
        IMPROVED_PRESETS,
        build_module,
        split_flags,
    )

    def millions(flags):
        with torch.device("meta"):
            module = build_module(*split_flags(flags)[:2])
        return sum(p.numel() for p in module.parameters()) / 1e6

    assert round(millions(GUIDED_PRESETS["64x64_diffusion"])) == 296
    assert round(millions(GUIDED_PRESETS["128x128_diffusion"])) == 422
    assert round(millions(GUIDED_PRESETS["256x256_diffusion"])) == 554
    assert round(millions(GUIDED_PRESETS["512x512_diffusion"])) == 559
    assert 50 <= millions(IMPROVED_PRESETS["cifar10_uncond_50M_500K"]) < 55
    assert 270 <= millions(IMPROVED_PRESETS["imagenet64_cond_270M_250K"]) < 275


@pytest.mark.parametrize("new_order", [False, True])
def test_sdpa_attention_equals_explicit_softmax_reference(new_order):
    qkv = torch.randn(3, 3 * 64, 20, generator=torch.Generator().manual_seed(2)) * 3
    torch.testing.assert_close(
        qkv_attention(qkv, 4, new_order), ref_attention(qkv, 4, new_order), rtol=1e-5, atol=1e-5
    )
    # the two orders read different channels: they differ on the same input
    assert not torch.allclose(
        qkv_attention(qkv, 4, new_order), qkv_attention(qkv, 4, not new_order), atol=1e-3
    )


def test_attention_conv2d_variant_stores_1x1_conv2d_and_computes_the_same():
    flags = dict(TINY, num_head_channels=16, use_new_attention_order=True, learn_sigma=True)
    a = randomize(ADMUNet(**flags)).eval()
    b = ADMUNet(**flags, attention_conv2d=True).eval()
    expected, _ = expected_unet_shapes(
        _cfg(dict(flags, resblock_updown=False, use_scale_shift_norm=True, class_cond=False)), conv2d=True
    )
    assert {k: tuple(v.shape) for k, v in b.state_dict().items()} == expected
    b.load_state_dict(
        {
            k: v[..., None] if k.endswith(("qkv.weight", "proj_out.weight")) else v
            for k, v in a.state_dict().items()
        },
        strict=True,
    )
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([5.0, 400.0])
    torch.testing.assert_close(b(x, t), a(x, t), rtol=1e-5, atol=1e-5)


def test_super_resolution_concatenates_the_bilinearly_upsampled_low_res_image():
    flags = dict(TINY, num_heads=2, learn_sigma=True, class_cond=True, num_classes=4)
    sr = randomize(ADMSuperRes(small_size=8, **flags)).eval()
    expected, plan = expected_unet_shapes(
        _cfg(dict(flags, resblock_updown=False, use_scale_shift_norm=True)), conv_in_channels=6
    )
    assert {k: tuple(v.shape) for k, v in sr.state_dict().items()} == expected
    x, low = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 8, 8)
    t, y = torch.tensor([10, 20]), torch.tensor([0, 3])
    up = F.interpolate(low, (16, 16), mode="bilinear", align_corners=False)
    ref = RefNet(sr.state_dict(), True, lambda c, up_: 2, False).unet(plan, torch.cat([x, up], 1), t, 32, y)
    torch.testing.assert_close(sr(x, t, y, low_res=low), ref, rtol=1e-4, atol=1e-4)
    assert sr.in_channels == 3 and sr.out_channels == 6 and sr.label_dim == 4


def ref_classifier(sd, plan, x, t, ch, scale_shift, head_channels):
    net = RefNet(sd, scale_shift, lambda c, up: c // head_channels, False)
    emb, h = net.emb(t, ch), x
    for name, layers in plan:
        if name.startswith("output"):
            break
        for j, (kind, _, cout) in enumerate(layers):
            h = net.layer(h, f"{name}.{j}", kind, emb, cout)
    h = F.silu(net.gn(h, "out.0"))
    b, c = h.shape[:2]
    h = h.reshape(b, c, -1)
    h = torch.cat([h.mean(-1, keepdim=True), h], -1) + sd["out.2.positional_embedding"][None]
    qkv = F.conv1d(h, sd["out.2.qkv_proj.weight"], sd["out.2.qkv_proj.bias"])
    a = ref_attention(qkv, c // head_channels, new_order=True)
    return F.conv1d(a, sd["out.2.c_proj.weight"], sd["out.2.c_proj.bias"])[:, :, 0]


@pytest.mark.parametrize("updown", [True, False])
def test_classifier_is_the_encoder_with_attention_pooling(updown):
    clf = randomize(
        ADMClassifier(
            image_size=16,
            width=32,
            depth=1,
            channel_mult="1,2",
            attention_resolutions="8",
            num_head_channels=16,
            resblock_updown=updown,
            num_classes=7,
        )
    ).eval()
    plan, _ = block_plan(16, 32, 1, (1, 2), {8}, updown)
    enc = [(n, layers) for n, layers in plan if not n.startswith("output")]
    expected = {
        "time_embed.0.weight": (128, 32),
        "time_embed.0.bias": (128,),
        "time_embed.2.weight": (128, 128),
        "time_embed.2.bias": (128,),
        "out.0.weight": (64,),
        "out.0.bias": (64,),
        "out.2.positional_embedding": (64, 8 * 8 + 1),
        "out.2.qkv_proj.weight": (192, 64, 1),
        "out.2.qkv_proj.bias": (192,),
        "out.2.c_proj.weight": (7, 64, 1),
        "out.2.c_proj.bias": (7,),
    }
    for name, layers in enc:
        for j, (kind, cin, cout) in enumerate(layers):
            expected.update(layer_shapes(f"{name}.{j}", kind, cin, cout, 128, True))
    assert {k: tuple(v.shape) for k, v in clf.state_dict().items()} == expected
    x, t = torch.randn(3, 3, 16, 16), torch.tensor([0, 50, 999])
    ref = ref_classifier(clf.state_dict(), enc, x, t, 32, True, 16)
    torch.testing.assert_close(clf(x, t), ref, rtol=1e-4, atol=1e-4)


def test_registry_builds_and_bad_flags_are_user_errors():
    from genzoo.errors import UserError

    assert {"adm", "adm-sr", "adm-classifier"} <= set(nets.names())
    net = nets.build("adm", **TINY, num_heads=2)
    assert (net.resolution, net.in_channels, net.out_channels, net.label_dim) == (16, 3, 3, 0)
    with pytest.raises(UserError, match="num_head_channels"):
        ADMUNet(**dict(TINY, num_head_channels=24))
    with pytest.raises(UserError, match="channel_mult"):
        ADMUNet(image_size=48, num_channels=32)
    with pytest.raises(UserError, match="attention_resolutions"):
        ADMUNet(**dict(TINY, attention_resolutions="8x"))


def test_convert_to_fp16_casts_the_block_convolutions_like_use_fp16():
    model = randomize(ADMUNet(**TINY, num_heads=2, learn_sigma=True)).eval()
    with torch.no_grad():  # smaller weights: random 0.3-std ones overflow float16 (upstream too)
        for p in model.parameters():
            p.mul_(0.3)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 500])
    ref = model(x, t)
    model.convert_to_fp16()
    assert model.input_blocks[1][0].in_layers[2].weight.dtype == torch.float16
    assert model.input_blocks[1][0].in_layers[0].weight.dtype == torch.float32  # GroupNorm stays fp32
    assert model.time_embed[0].weight.dtype == torch.float32 and model.out[2].weight.dtype == torch.float32
    out = model(x, t)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=0.02, atol=0.02)


@pytest.mark.parametrize("case", ["new-headch-updown", "legacy-updown-noss"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
def test_unet_gradients_match_the_reference_forward(case, channels_last):
    """The optimised blocks (native-dtype GroupNorm, addcmul, in-place SiLU, fused attention, optionally
    channels_last) give the reference's input and weight gradients to 1e-4 relative in float32."""
    flags = CASES[case]
    model = randomize(ADMUNet(**TINY, **flags)).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    params = dict(model.named_parameters())
    _, plan = expected_unet_shapes(_cfg(flags))
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 16, 16, generator=gen)
    t, y = torch.tensor([5, 640]), (torch.tensor([0, 4]) if flags["class_cond"] else None)
    new_order = flags.get("use_new_attention_order", False)
    ref_net = RefNet(params, flags["use_scale_shift_norm"], _heads_fn(flags), new_order)

    def grads(forward, x):
        x = x.clone().requires_grad_(True)
        out = forward(x)
        weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
        return torch.autograd.grad((out * weights).sum(), [x, *params.values()])

    ref = grads(lambda x: ref_net.unet(plan, x, t, 32, y), x)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    got = grads(lambda x: model(x, t, y), x.contiguous(memory_format=fmt))
    torch.testing.assert_close(got[0], ref[0], rtol=1e-4, atol=1e-4 * ref[0].abs().max().item())
    # weight gradients as one vector: some are ~0 by symmetry (a conv bias just before GroupNorm)
    got_w, ref_w = torch.cat([g.flatten() for g in got[1:]]), torch.cat([g.flatten() for g in ref[1:]])
    assert (got_w - ref_w).norm() <= 1e-4 * ref_w.norm()
