"""Released BigGAN layouts: tiny state dicts in each layout, built here with random values, must load
and match an independent re-implementation of the public code's forward written in this file."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from genzoo.checkpoints import load_official, save_model_dir
from genzoo.checkpoints.record import record_of
from genzoo.errors import UserError

# ----------------------------------------------------------------------------- helpers


class Maker:
    """Random tensors with power-iterated singular vectors, so that σ = uᵀWv is the top singular value."""

    def __init__(self, seed: int):
        self.g = torch.Generator().manual_seed(seed)
        self.sd: dict[str, torch.Tensor] = {}

    def randn(self, *shape, scale=1.0):
        return torch.randn(*shape, generator=self.g) * scale

    def singular_vectors(self, w):
        m = w.reshape(w.shape[0], -1)
        u = F.normalize(self.randn(m.shape[0]), dim=0)
        for _ in range(30):
            v = F.normalize(m.t() @ u, dim=0)
            u = F.normalize(m @ v, dim=0)
        return u, v


# ----------------------------------------------------------------------------- biggan-hf

HF_FLAGS = dict(
    output_dim=8,
    z_dim=6,
    class_embed_dim=6,
    channel_width=4,
    num_classes=5,
    layers=[[False, 16, 8], [True, 8, 4], [False, 4, 2], [False, 2, 1]],
    attention_layer_position=2,
    eps=1e-4,
    n_stats=3,
)


def hf_state(flags, seed=0):
    """A state dict with the port's key names (torch.nn.utils.spectral_norm's weight_orig/u/v)."""
    mk = Maker(seed)
    sd, ch, n = mk.sd, flags["channel_width"], flags["n_stats"]
    cond = 2 * flags["z_dim"]

    def sn(prefix, shape, bias=True):
        w = mk.randn(*shape, scale=0.5)
        u, v = mk.singular_vectors(w)
        sd[prefix + "weight_orig"], sd[prefix + "weight_u"], sd[prefix + "weight_v"] = w, u, v
        if bias:
            sd[prefix + "bias"] = mk.randn(shape[0], scale=0.1)

    def bn(prefix, c, conditional=True):
        sd[prefix + "running_means"] = mk.randn(n, c, scale=0.2)
        sd[prefix + "running_vars"] = mk.randn(n, c).abs() + 0.5
        if conditional:
            sn(prefix + "scale.", (c, cond), bias=False)
            sn(prefix + "offset.", (c, cond), bias=False)
        else:
            sd[prefix + "weight"] = 1 + mk.randn(c, scale=0.1)
            sd[prefix + "bias"] = mk.randn(c, scale=0.1)

    sd["embeddings.weight"] = mk.randn(flags["z_dim"], flags["num_classes"])
    sn("generator.gen_z.", (4 * 4 * 16 * ch, cond))
    index = 0
    for i, (_, a, b) in enumerate(flags["layers"]):
        if i == flags["attention_layer_position"]:
            c = a * ch
            p = f"generator.layers.{index}."
            sn(p + "snconv1x1_theta.", (c // 8, c, 1, 1), bias=False)
            sn(p + "snconv1x1_phi.", (c // 8, c, 1, 1), bias=False)
            sn(p + "snconv1x1_g.", (c // 2, c, 1, 1), bias=False)
            sn(p + "snconv1x1_o_conv.", (c, c // 2, 1, 1), bias=False)
            sd[p + "gamma"] = torch.tensor([0.8])
            index += 1
        p = f"generator.layers.{index}."
        cin, cout, mid = a * ch, b * ch, a * ch // 4
        bn(p + "bn_0.", cin)
        sn(p + "conv_0.", (mid, cin, 1, 1))
        bn(p + "bn_1.", mid)
        sn(p + "conv_1.", (mid, mid, 3, 3))
        bn(p + "bn_2.", mid)
        sn(p + "conv_2.", (mid, mid, 3, 3))
        bn(p + "bn_3.", mid)
        sn(p + "conv_3.", (cout, mid, 1, 1))
        index += 1
    bn("generator.bn.", ch, conditional=False)
    sn("generator.conv_to_rgb.", (ch, ch, 3, 3))
    return sd


def hf_reference(sd, flags, z, class_vector, truncation):
    """The port's forward, written from its description: eval-mode spectral norm from the stored u, v."""

    def w(prefix):
        W = sd[prefix + "weight_orig"]
        sigma = torch.dot(sd[prefix + "weight_u"], W.reshape(W.shape[0], -1) @ sd[prefix + "weight_v"])
        return W / sigma

    def stats(prefix):
        step = 1.0 / (flags["n_stats"] - 1)
        coef, start = math.modf(truncation / step)
        start = int(start)
        m, v = sd[prefix + "running_means"], sd[prefix + "running_vars"]
        if coef == 0:
            return m[start], v[start]
        return m[start] * coef + m[start + 1] * (1 - coef), v[start] * coef + v[start + 1] * (1 - coef)

    def bn(prefix, x, cond=None):
        mean, var = stats(prefix)
        x = (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + flags["eps"])
        if cond is None:
            return x * sd[prefix + "weight"][None, :, None, None] + sd[prefix + "bias"][None, :, None, None]
        gain = 1 + cond @ w(prefix + "scale.").t()
        return x * gain[:, :, None, None] + (cond @ w(prefix + "offset.").t())[:, :, None, None]

    def conv(prefix, x, pad=0):
        return F.conv2d(x, w(prefix), sd.get(prefix + "bias"), padding=pad)

    ch = flags["channel_width"]
    cond = torch.cat([z, class_vector @ sd["embeddings.weight"].t()], dim=1)
    h = cond @ w("generator.gen_z.").t() + sd["generator.gen_z.bias"]
    h = h.view(-1, 4, 4, 16 * ch).permute(0, 3, 1, 2)
    index = 0
    for i, (up, a, b) in enumerate(flags["layers"]):
        if i == flags["attention_layer_position"]:
            p = f"generator.layers.{index}."
            n, c, hh, ww = h.shape
            theta = conv(p + "snconv1x1_theta.", h).view(n, c // 8, hh * ww)
            phi = F.max_pool2d(conv(p + "snconv1x1_phi.", h), 2).view(n, c // 8, -1)
            g = F.max_pool2d(conv(p + "snconv1x1_g.", h), 2).view(n, c // 2, -1)
            attn = torch.softmax(theta.transpose(1, 2) @ phi, dim=-1)
            o = conv(p + "snconv1x1_o_conv.", (g @ attn.transpose(1, 2)).view(n, c // 2, hh, ww))
            h = h + sd[p + "gamma"] * o
            index += 1
        p = f"generator.layers.{index}."
        x0 = h
        h = conv(p + "conv_0.", F.relu(bn(p + "bn_0.", h, cond)))
        h = F.relu(bn(p + "bn_1.", h, cond))
        if up:
            h = F.interpolate(h, scale_factor=2, mode="nearest")
        h = conv(p + "conv_1.", h, 1)
        h = conv(p + "conv_2.", F.relu(bn(p + "bn_2.", h, cond)), 1)
        h = conv(p + "conv_3.", F.relu(bn(p + "bn_3.", h, cond)))
        if a != b:
            x0 = x0[:, : x0.shape[1] // 2]
        if up:
            x0 = F.interpolate(x0, scale_factor=2, mode="nearest")
        h = h + x0
        index += 1
    h = conv("generator.conv_to_rgb.", F.relu(bn("generator.bn.", h)), 1)
    return torch.tanh(h[:, :3])


@pytest.mark.parametrize("truncation", [0.37, 0.5, 1.0])
def test_biggan_hf_layout_loads_and_matches_the_reference(truncation):
    sd = hf_state(HF_FLAGS)
    model = load_official("biggan-hf", sd, **HF_FLAGS)
    z = torch.randn(3, 6, generator=torch.Generator().manual_seed(1)).clamp(-2, 2) * truncation
    cv = F.one_hot(torch.tensor([0, 3, 4]), 5).float()
    cv[2] = torch.tensor([0.0, 0.3, 0.0, 0.0, 0.7])  # soft class vectors are linear in the embedding
    with torch.no_grad():
        ours = model(z, cv, truncation)
        ref = hf_reference(sd, HF_FLAGS, z, cv, truncation)
    assert ours.shape == (3, 3, 8, 8)
    assert ref.abs().max() < 0.999  # not saturated, so the comparison means something
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)
    with pytest.raises(UserError, match="truncation"):
        model(z, cv, 1.2)


def test_biggan_hf_file_convert_and_genzoo_load_sample_the_same_images(tmp_path):
    from genzoo.api import load, sample
    from genzoo.checkpoints import get_source
    from genzoo.gan.latents import sample_latents
    from genzoo.seeds import StackedRandomGenerator

    sd = hf_state(HF_FLAGS, seed=3)
    torch.save(sd, tmp_path / "pytorch_model.bin")
    model = load_official("biggan-hf", tmp_path / "pytorch_model.bin", **HF_FLAGS)
    config, weights = get_source("biggan-hf").to_genzoo(model, HF_FLAGS)
    save_model_dir(tmp_path / "converted", config, weights)
    loaded = load(tmp_path / "converted")
    images, labels, nfe = sample(loaded, "0-3", class_labels=2, batch_size=3, truncation=0.4)
    assert nfe == 1 and images.dtype == torch.uint8 and images.shape == (4, 3, 8, 8)
    z = sample_latents(StackedRandomGenerator("cpu", range(4)), 6, 0.4, style="scaled")
    assert z.abs().max() <= 0.8
    with torch.no_grad():
        direct = model(z, F.one_hot(torch.full((4,), 2), 5).float(), 0.4)
    expected = ((direct + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    assert (images.int() - expected.int()).abs().max() <= 1


def test_biggan_hf_mismatch_names_the_preset_it_looks_like():
    from genzoo.checkpoints.biggan import hf_guess_preset

    with pytest.raises(UserError, match="biggan-hf checkpoint.*shape mismatch: layers.4.conv_3.weight"):
        load_official(
            "biggan-hf",
            hf_state(HF_FLAGS),
            **{**HF_FLAGS, "layers": HF_FLAGS["layers"][:3] + [[False, 2, 2]]},
        )
    keys = {f"generator.layers.{i}.bn_0.running_means": torch.zeros(1) for i in range(13) if i != 8}
    assert hf_guess_preset(keys) == "biggan-deep-256"
    with pytest.raises(UserError, match="unknown flag"):
        load_official("biggan-hf", hf_state(HF_FLAGS), **HF_FLAGS, width=3)
    with pytest.raises(UserError, match="valid: biggan-deep-128"):
        load_official("biggan-hf", {}, preset="biggan-deep-64")


# ----------------------------------------------------------------------------- biggan-pytorch

BP_FLAGS = dict(
    resolution=32,
    n_classes=5,
    G_ch=2,
    D_ch=2,
    dim_z=8,
    shared_dim=4,
    hier=True,
    G_shared=True,
    G_attn="16",
    D_attn="16",
    BN_eps=1e-5,
    SN_eps=1e-6,
    D_nl="inplace_relu",
)
G_IN, G_OUT = [8, 8, 8], [8, 8, 8]  # G_arch[32] with ch 2
D_IN, D_OUT, D_DOWN = [3, 8, 8, 8], [8, 8, 8, 8], [True, True, False, False]


def bp_state_g(seed=0):
    mk = Maker(seed)
    sd = mk.sd
    chunk, shared = 2, 4

    def sn(prefix, shape, bias=True):
        sd[prefix + "weight"] = mk.randn(*shape, scale=0.5)
        sd[prefix + "u0"] = mk.randn(1, shape[0])
        sd[prefix + "sv0"] = torch.ones(1)
        if bias:
            sd[prefix + "bias"] = mk.randn(shape[0], scale=0.1)

    def ccbn(prefix, c):
        sn(prefix + "gain.", (c, shared + chunk), bias=False)
        sn(prefix + "bias.", (c, shared + chunk), bias=False)
        sd[prefix + "stored_mean"] = mk.randn(c, scale=0.2)
        sd[prefix + "stored_var"] = mk.randn(c).abs() + 0.5

    sd["shared.weight"] = mk.randn(5, shared)
    sn("linear.", (G_IN[0] * 16, chunk))
    for i, (a, b) in enumerate(zip(G_IN, G_OUT)):
        p = f"blocks.{i}.0."
        sn(p + "conv1.", (b, a, 3, 3))
        sn(p + "conv2.", (b, b, 3, 3))
        sn(p + "conv_sc.", (b, a, 1, 1))
        ccbn(p + "bn1.", a)
        ccbn(p + "bn2.", b)
        if i == 1:  # attention at 16 px
            q = f"blocks.{i}.1."
            sn(q + "theta.", (b // 8, b, 1, 1), bias=False)
            sn(q + "phi.", (b // 8, b, 1, 1), bias=False)
            sn(q + "g.", (b // 2, b, 1, 1), bias=False)
            sn(q + "o.", (b, b // 2, 1, 1), bias=False)
            sd[q + "gamma"] = torch.tensor(0.6)
    sd["output_layer.0.gain"] = 1 + mk.randn(G_OUT[-1], scale=0.1)
    sd["output_layer.0.bias"] = mk.randn(G_OUT[-1], scale=0.1)
    sd["output_layer.0.stored_mean"] = mk.randn(G_OUT[-1], scale=0.2)
    sd["output_layer.0.stored_var"] = mk.randn(G_OUT[-1]).abs() + 0.5
    sn("output_layer.2.", (3, G_OUT[-1], 3, 3))
    return sd


def bp_state_d(seed=1):
    mk = Maker(seed)
    sd = mk.sd

    def sn(prefix, shape, bias=True):
        sd[prefix + "weight"] = mk.randn(*shape, scale=0.5)
        sd[prefix + "u0"] = mk.randn(1, shape[0])
        sd[prefix + "sv0"] = torch.ones(1)
        if bias:
            sd[prefix + "bias"] = mk.randn(shape[0], scale=0.1)

    for i, (a, b) in enumerate(zip(D_IN, D_OUT)):
        p = f"blocks.{i}.0."
        sn(p + "conv1.", (b, a, 3, 3))
        sn(p + "conv2.", (b, b, 3, 3))
        if a != b or D_DOWN[i]:
            sn(p + "conv_sc.", (b, a, 1, 1))
        q = f"blocks.{i}.1."  # the 32 px table labels every block 16 px: attention after each
        sn(q + "theta.", (b // 8, b, 1, 1), bias=False)
        sn(q + "phi.", (b // 8, b, 1, 1), bias=False)
        sn(q + "g.", (b // 2, b, 1, 1), bias=False)
        sn(q + "o.", (b, b // 2, 1, 1), bias=False)
        sd[q + "gamma"] = torch.tensor(0.5)
    sn("linear.", (1, D_OUT[-1]))
    sn("embed.", (5, D_OUT[-1]), bias=False)
    return sd


def bp_weight(sd, prefix, eps=1e-6):
    """BigGAN-PyTorch's W_() in eval mode: one power-iteration step from u0, W / σ."""
    W = sd[prefix + "weight"]
    m = W.reshape(W.shape[0], -1)
    v = F.normalize(sd[prefix + "u0"] @ m, eps=eps)
    u = F.normalize(v @ m.t(), eps=eps)
    return W / (v @ m.t() @ u.t()).squeeze()


def bp_attention(sd, p, x):
    n, c, hh, ww = x.shape
    theta = F.conv2d(x, bp_weight(sd, p + "theta.")).view(n, c // 8, hh * ww)
    phi = F.max_pool2d(F.conv2d(x, bp_weight(sd, p + "phi.")), 2).view(n, c // 8, -1)
    g = F.max_pool2d(F.conv2d(x, bp_weight(sd, p + "g.")), 2).view(n, c // 2, -1)
    beta = torch.softmax(torch.bmm(theta.transpose(1, 2), phi), -1)
    o = F.conv2d(torch.bmm(g, beta.transpose(1, 2)).view(n, c // 2, hh, ww), bp_weight(sd, p + "o."))
    return sd[p + "gamma"] * o + x


def bp_reference_g(sd, z, y, bn_eps=1e-5, out_bn_eps=1e-5):
    """G.forward of BigGAN-PyTorch: ccbn layers use --BN_eps; the output layer's ``layers.bn`` is built
    without it (its default 1e-5)."""

    def conv(p, x, pad):
        return F.conv2d(x, bp_weight(sd, p), sd[p + "bias"], padding=pad)

    def ccbn(p, x, cond):
        gain = 1 + cond @ bp_weight(sd, p + "gain.").t()
        bias = cond @ bp_weight(sd, p + "bias.").t()
        out = F.batch_norm(x, sd[p + "stored_mean"], sd[p + "stored_var"], None, None, False, 0.1, bn_eps)
        return out * gain[:, :, None, None] + bias[:, :, None, None]

    zs = torch.split(z, 2, 1)
    h = (zs[0] @ bp_weight(sd, "linear.").t() + sd["linear.bias"]).view(z.shape[0], -1, 4, 4)
    for i, chunk in enumerate(zs[1:]):
        cond = torch.cat([y, chunk], 1)
        p = f"blocks.{i}.0."
        x = h
        h = F.relu(ccbn(p + "bn1.", h, cond))
        h, x = F.interpolate(h, scale_factor=2), F.interpolate(x, scale_factor=2)
        h = conv(p + "conv2.", F.relu(ccbn(p + "bn2.", conv(p + "conv1.", h, 1), cond)), 1)
        h = h + conv(p + "conv_sc.", x, 0)
        if f"blocks.{i}.1.gamma" in sd:
            h = bp_attention(sd, f"blocks.{i}.1.", h)
    h = F.batch_norm(
        h,
        sd["output_layer.0.stored_mean"],
        sd["output_layer.0.stored_var"],
        sd["output_layer.0.gain"],
        sd["output_layer.0.bias"],
        False,
        0.1,
        out_bn_eps,
    )
    return torch.tanh(conv("output_layer.2.", F.relu(h), 1))


def bp_reference_d(sd, x, y, skip_after_relu=False):
    """D.forward of BigGAN-PyTorch: DBlock pre-activates with an out-of-place F.relu, so the skip sees the
    block input (``skip_after_relu`` is the in-place variant genzoo used to compute, for contrast)."""

    def conv(p, t, pad):
        return F.conv2d(t, bp_weight(sd, p), sd[p + "bias"], padding=pad)

    h = x
    for i in range(len(D_IN)):
        p = f"blocks.{i}.0."
        inp = h
        if i > 0:
            h = F.relu(h)
        inner = conv(p + "conv2.", F.relu(conv(p + "conv1.", h, 1)), 1)
        skip = h if skip_after_relu else inp
        if i > 0:
            skip = conv(p + "conv_sc.", skip, 0) if p + "conv_sc.weight" in sd else skip
            skip = F.avg_pool2d(skip, 2) if D_DOWN[i] else skip
        else:
            skip = F.avg_pool2d(skip, 2) if D_DOWN[i] else skip
            skip = conv(p + "conv_sc.", skip, 0)
        if D_DOWN[i]:
            inner = F.avg_pool2d(inner, 2)
        h = bp_attention(sd, f"blocks.{i}.1.", inner + skip)
    h = F.relu(h).sum([2, 3])
    out = h @ bp_weight(sd, "linear.").t() + sd["linear.bias"]
    return out + (F.embedding(y, bp_weight(sd, "embed.")) * h).sum(1, keepdim=True)


def test_biggan_pytorch_generator_layout_loads_and_matches_the_reference():
    sd = bp_state_g()
    G = load_official("biggan-pytorch", sd, **BP_FLAGS)
    z = torch.randn(3, 8, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 2, 4])
    with torch.no_grad():
        y = G.shared(labels)
        ours = G(z, y)
        ref = bp_reference_g(sd, z, y)
    assert ours.shape == (3, 3, 32, 32) and ref.abs().max() < 0.999
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


def test_biggan_pytorch_discriminator_layout_loads_and_matches_the_reference():
    sd = bp_state_d()
    D = load_official("biggan-pytorch", sd, **BP_FLAGS)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    y = torch.tensor([1, 3])
    with torch.no_grad():
        ours, ref = D(x, y), bp_reference_d(sd, x, y)
        inplace = bp_reference_d(sd, x, y, skip_after_relu=True)
    assert ours.shape == (2, 1)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
    assert ((inplace - ref).abs().max() / ref.abs().max()).item() > 1e-2  # the skip path matters


def test_biggan_pytorch_output_bn_ignores_bn_eps():
    sd = bp_state_g()
    sd["output_layer.0.stored_var"] = torch.full_like(sd["output_layer.0.stored_var"], 1e-3)  # eps matters
    flags = dict(BP_FLAGS, BN_eps=1e-4)
    G = load_official("biggan-pytorch", sd, **flags)
    assert G.net.out_bn.eps == 1e-5 and G.net.blocks[0][0].bn1.eps == 1e-4
    z = torch.randn(3, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = G.shared(torch.tensor([0, 2, 4]))
        ours = G(z, y)
        ref = bp_reference_g(sd, z, y, bn_eps=1e-4, out_bn_eps=1e-5)
        wrong = bp_reference_g(sd, z, y, bn_eps=1e-4, out_bn_eps=1e-4)
    # the small variance amplifies float32 rounding ~30×: a tolerance 10× below the eps effect
    torch.testing.assert_close(ours, ref, rtol=1e-3, atol=1e-4)
    assert (wrong - ref).abs().max() > 1e-2


def test_biggan_pytorch_g_converts_to_a_genzoo_model_and_d_does_not(tmp_path):
    from genzoo.api import load
    from genzoo.checkpoints import get_source

    sd = bp_state_g()
    G = load_official("biggan-pytorch", sd, **BP_FLAGS)
    config, weights = get_source("biggan-pytorch").to_genzoo(G, BP_FLAGS)
    assert config["arch"] == "biggan" and config["family"] == "gan"
    save_model_dir(tmp_path / "m", config, weights)
    loaded = load(tmp_path / "m")
    z = torch.randn(2, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(z, torch.tensor([1, 2])), G(z, G.shared(torch.tensor([1, 2]))))
    assert "D.linear.weight" not in weights["model"]  # no D given or beside it
    D = load_official("biggan-pytorch", bp_state_d(), **BP_FLAGS)
    with pytest.raises(UserError, match="discriminator"):
        get_source("biggan-pytorch").to_genzoo(D, BP_FLAGS)
    with pytest.raises(UserError, match="G_shared"):
        load_official("biggan-pytorch", sd, **{**BP_FLAGS, "G_shared": False})


def test_genzoo_convert_cli_reads_string_flags_and_the_result_samples(tmp_path, capsys):
    from genzoo.api import load
    from genzoo.cli import main

    torch.save(hf_state(HF_FLAGS), tmp_path / "hf.bin")
    flags = []
    for key, value in HF_FLAGS.items():
        flags += [f"--{key}", str(value).replace("False", "false").replace("True", "true")]
    assert (
        main(["convert", "--from", "biggan-hf", str(tmp_path / "hf.bin"), str(tmp_path / "hf"), *flags]) == 0
    )
    assert record_of(load(tmp_path / "hf")).config["net"]["n_stats"] == 3
    grid = tmp_path / "grid.png"
    assert (
        main(
            [
                "sample",
                "--ckpt",
                str(tmp_path / "hf"),
                "--seeds",
                "0-3",
                "--class",
                "2",
                "--truncation",
                "0.4",
                "--grid",
                str(grid),
            ]
        )
        == 0
    )
    assert grid.is_file()

    torch.save(bp_state_g(), tmp_path / "G_ema.pth")
    flags = [x for key, value in BP_FLAGS.items() for x in (f"--{key}", str(value))]
    assert (
        main(
            ["convert", "--from", "biggan-pytorch", str(tmp_path / "G_ema.pth"), str(tmp_path / "bp"), *flags]
        )
        == 0
    )
    assert record_of(load(tmp_path / "bp")).config["net"]["hier"] is True
    assert (
        main(
            [
                "convert",
                "--from",
                "biggan-pytorch",
                str(tmp_path / "G_ema.pth"),
                str(tmp_path / "bad"),
                "--hier",
                "maybe",
            ]
        )
        == 2
    )
    assert "flag hier" in capsys.readouterr().err


def test_biggan_hf_256_preset_has_the_released_parameter_count():
    from genzoo.checkpoints.biggan import HF_PRESETS, hf_net_config
    from genzoo.nets.biggan import BigGANDeepGenerator

    with torch.device("meta"):
        G = BigGANDeepGenerator(**hf_net_config(HF_PRESETS["biggan-deep-256"]))
    assert round(sum(p.numel() for p in G.parameters()) / 1e6, 1) == 55.9  # the port's README: 55.9M


@pytest.mark.parametrize("how", ["beside", "flag"])
def test_biggan_pytorch_convert_writes_d_as_well_as_g(tmp_path, how, capsys):
    from safetensors.torch import load_file

    from genzoo.cli import main
    from genzoo.nets.biggan import BigGANDiscriminator

    run = tmp_path / "weights"
    run.mkdir()
    torch.save(bp_state_g(), run / "G_ema.pth")
    d_path = run / "D.pth" if how == "beside" else tmp_path / "elsewhere_D.pth"
    sd_d = bp_state_d()
    torch.save(sd_d, d_path)
    flags = [x for key, value in BP_FLAGS.items() for x in (f"--{key}", str(value))]
    if how == "flag":
        flags += ["--D_pth", str(d_path)]
    convert = ["convert", "--from", "biggan-pytorch", str(run / "G_ema.pth")]
    assert main([*convert, str(tmp_path / "m"), *flags]) == 0
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    state = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert config["d_arch"] == "biggan-d" and any(k.startswith("G.") for k in state)
    D = BigGANDiscriminator(**config["d_net"])
    D.load_state_dict({k[2:]: v for k, v in state.items() if k.startswith("D.")})
    D.eval()  # spectral norm with the stored vectors, no power iteration
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    y = torch.tensor([1, 3])
    with torch.no_grad():
        torch.testing.assert_close(D(x, y).view(-1, 1), bp_reference_d(sd_d, x, y), rtol=1e-4, atol=1e-4)
    torch.save(bp_state_g(), tmp_path / "not_d.pth")
    bad = [*flags[: len(flags) - (2 if how == "flag" else 0)], "--D_pth", str(tmp_path / "not_d.pth")]
    assert main([*convert, str(tmp_path / "n"), *bad]) == 2
    assert "not_d.pth: not a BigGAN-PyTorch discriminator" in capsys.readouterr().err
