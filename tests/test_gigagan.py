"""GigaGAN: adaptive kernels, modulation, pyramid, multi-scale D, matching-aware loss, controls, upsampler."""

import math

import pytest
import torch
import torch.nn.functional as F

from genzoo import nets
from genzoo.gan import gigagan as giga
from genzoo.nets.gigagan import AdaptiveConv2d, mix_kernels, modulate
from genzoo.seeds import StackedRandomGenerator
from genzoo.train.objective import Batch

TEXT = {"kind": "learned", "dim": 32, "depth": 1, "heads": 2}


def tiny_generator(**kw):
    torch.manual_seed(0)
    cfg = dict(
        resolution=16,
        z_dim=16,
        w_dim=32,
        mapping_layers=2,
        channel_base=256,
        channel_max=16,
        num_kernels=3,
        attn_res=(8,),
        head_dim=8,
        text=TEXT,
        default_prompts=["a red circle"],
    )
    cfg.update(kw)
    return nets.build("gigagan-generator", **cfg).eval()


def tiny_discriminator(**kw):
    torch.manual_seed(1)
    cfg = dict(resolution=16, channel_base=256, channel_max=16, attn_res=(8,), head_dim=8, text=TEXT)
    cfg.update(kw)
    return nets.build("gigagan-discriminator", **cfg)


def test_kernel_bank_mixes_to_the_selected_kernel():
    bank = torch.randn(4, 5, 3, 3, 3)
    one_hot = F.one_hot(torch.tensor([2, 0]), 4).float()
    mixed = mix_kernels(bank, one_hot)
    assert torch.equal(mixed[0], bank[2]) and torch.equal(mixed[1], bank[0])
    half = mix_kernels(bank, torch.tensor([[0.5, 0.5, 0.0, 0.0]]))
    torch.testing.assert_close(half[0], (bank[0] + bank[1]) / 2)

    # Through the layer: a selection affine that saturates on kernel 1 convolves with kernel 1 alone.
    conv = AdaptiveConv2d(3, 5, w_dim=8, num_kernels=4)
    with torch.no_grad():
        conv.select.weight.zero_()
        conv.select.bias.copy_(torch.tensor([0.0, 200.0, 0.0, 0.0]))
    x, w = torch.randn(2, 3, 9, 9), torch.randn(2, 8)
    styles = conv.affine(w)
    expected = torch.stack(
        [
            F.conv2d(
                x[i : i + 1], modulate((conv.bank[1] * conv.scale)[None], styles[i : i + 1])[0], padding=1
            )[0]
            for i in range(2)
        ]
    )
    torch.testing.assert_close(conv(x, w), expected, rtol=1e-4, atol=1e-5)


def test_demodulation_normalises_output_variance():
    torch.manual_seed(0)
    conv = AdaptiveConv2d(64, 32, w_dim=8, num_kernels=4)
    with torch.no_grad():
        conv.affine.bias.mul_(7.0)  # large styles: without demodulation the variance would explode
    x = torch.randn(4, 64, 40, 40)
    w = torch.randn(4, 8)
    y = conv(x, w)[..., 1:-1, 1:-1]  # away from the zero padding
    per_channel = y.detach().var(dim=(2, 3))
    assert per_channel.shape == (4, 32)
    assert abs(float(per_channel.mean()) - 1.0) < 0.05
    assert float((per_channel - 1).abs().max()) < 0.2
    conv.demodulate = False
    assert float(conv(x, w).detach()[..., 1:-1, 1:-1].var(dim=(2, 3)).mean()) > 10.0


def test_generator_returns_the_configured_pyramid():
    G = tiny_generator()
    z = torch.randn(3, 16)
    prompts = ["a red circle", "a blue square", "a green cross"]
    pyramid = G(z, prompts=prompts, return_pyramid=True, rng=StackedRandomGenerator("cpu", [0, 1, 2]))
    assert sorted(pyramid) == [8, 16] == G.pyramid
    for res, img in pyramid.items():
        assert img.shape == (3, 3, res, res) and img.dtype == torch.float32
    image = G(z, prompts=prompts, rng=StackedRandomGenerator("cpu", [0, 1, 2]))
    torch.testing.assert_close(image, pyramid[16])
    G4 = tiny_generator(pyramid=(4, 16))
    assert sorted(G4(z, prompts=prompts, return_pyramid=True)) == [4, 16]
    with pytest.raises(ValueError, match="pyramid"):
        tiny_generator(pyramid=(8,))  # must end at the output resolution


def test_discriminator_multiscale_outputs_have_the_stated_shapes():
    D = tiny_discriminator(resolution=32, pyramid=(8, 16, 32))
    images = {r: torch.randn(2, 3, r, r) for r in (8, 16, 32)}
    out = D(images, prompts=["a red circle", "a blue square"])
    expected = {(8, 4), (16, 8), (16, 4), (32, 16), (32, 8), (32, 4)}
    assert set(out) == expected == set(D.output_keys())
    assert all(v.shape == (2,) for v in out.values())
    # A single tensor is turned into the pyramid by area downsampling.
    assert set(D(torch.randn(2, 3, 32, 32), prompts=["a", "b"])) == expected
    # The text conditions every head.
    other = D(images, prompts=["a yellow triangle", "a green cross"])
    assert all(not torch.allclose(out[k], other[k]) for k in expected)


def test_mismatched_captions_differ_from_the_originals():
    captions = ["red circle", "blue square", "red circle", "green cross"]
    gen = torch.Generator().manual_seed(3)
    wrong, differs = giga.mismatched_captions(captions, gen)
    assert sorted(wrong) == sorted(captions) and wrong != captions
    assert differs.tolist() == [a != b for a, b in zip(captions, wrong)]


def test_matching_aware_loss_sees_mismatched_pairs():
    G, D = tiny_generator().train(), tiny_discriminator()
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    captions = ["a red circle", "a blue square", "a green cross", "a yellow triangle"]
    batch = Batch(images=images, labels=torch.full((4,), -1), captions=captions)
    seen = []
    encode = D.encode_text
    D.encode_text = lambda prompts: seen.append(list(prompts)) or encode(prompts)

    def d_loss(weight):
        objective = giga.GigaGANObjective(G, D, match_weight=weight, r1_gamma=0.0)
        torch.manual_seed(5)
        return objective.loss("D", batch, step=1)

    with_match, without = d_loss(1.0), d_loss(0.0)
    mismatched = [p for p in seen if p != captions]
    assert len(mismatched) == 1 and len(mismatched[0]) == 4
    assert all(w != c for w, c in zip(mismatched[0], captions)) and sorted(mismatched[0]) == sorted(captions)
    # The extra term is exactly softplus(D(real image, wrong caption)) averaged over scales.
    added = float((with_match.loss - without.loss).detach())
    assert added == pytest.approx(with_match.logs["D/mismatch"], rel=1e-4)
    assert added > 0


def test_prompt_changes_output_and_a_fixed_prompt_and_seed_is_deterministic():
    G = tiny_generator()

    def run(prompt, seeds=(0, 1)):
        return giga.sample(G, StackedRandomGenerator("cpu", list(seeds)), None, {"prompt": [prompt]})[0]

    a = run("a red circle")
    torch.testing.assert_close(a, run("a red circle"), rtol=0, atol=0)
    torch.testing.assert_close(a[1:], run("a red circle", seeds=(1,)), rtol=1e-4, atol=1e-5)  # batch-free
    b = run("a blue square")
    assert (a - b).abs().max() > 1e-3
    assert a.shape == (2, 3, 16, 16) and a.min() >= -1 and a.max() <= 1
    # Without a prompt the saved default prompts are used.
    torch.testing.assert_close(giga.sample(G, StackedRandomGenerator("cpu", [0, 1]), None, {})[0], a)


def test_style_mixing_at_boundary_0_or_L_equals_the_pure_styles():
    G = tiny_generator()
    text = G.encode_text(["a red circle"] * 2)
    w1, w2 = G.map(torch.randn(2, 16), text), G.map(torch.randn(2, 16), text)
    L = G.num_ws

    def image(ws):
        return G.synthesis(ws, text, StackedRandomGenerator("cpu", [7, 8]))[16]

    with torch.no_grad():
        torch.testing.assert_close(image(giga.style_mix(w1, w2, 0, L)), image(w2))
        torch.testing.assert_close(image(giga.style_mix(w1, w2, L, L)), image(w1))
        mixed = image(giga.style_mix(w1, w2, L // 2, L))
    assert (mixed - image(w1)).abs().max() > 1e-4 and (mixed - image(w2)).abs().max() > 1e-4
    with pytest.raises(Exception, match="--mix-layer"):
        giga.style_mix(w1, w2, L + 1, L)


def test_prompt_mixing_at_the_boundaries_equals_the_single_prompts():
    G = tiny_generator()
    z = torch.randn(2, 16)
    red, blue = ["a red circle"] * 2, ["a blue square"] * 2

    def mix(boundary):
        return giga.prompt_mix(G, z, red, blue, boundary, rng=StackedRandomGenerator("cpu", [3, 4]))

    def pure(prompts):
        return G(z, prompts=prompts, rng=StackedRandomGenerator("cpu", [3, 4]))

    with torch.no_grad():
        torch.testing.assert_close(mix(0), pure(blue))
        torch.testing.assert_close(mix(G.num_ws), pure(red))
        half = mix(G.num_ws // 2)
    assert (half - pure(red)).abs().max() > 1e-4 and (half - pure(blue)).abs().max() > 1e-4


def test_sample_options_style_seed_and_prompt_fine():
    G = tiny_generator()
    rng = lambda: StackedRandomGenerator("cpu", [0, 1])  # noqa: E731
    base = giga.sample(G, rng(), None, {"prompt": ["a red circle"]})[0]
    same = giga.sample(G, rng(), None, {"prompt": ["a red circle"], "mix_layer": G.num_ws, "style_seed": 9})[
        0
    ]
    torch.testing.assert_close(base, same)  # boundary L: the style seed reaches no layer
    styled = giga.sample(G, rng(), None, {"prompt": ["a red circle"], "style_seed": 9})[0]
    fine = giga.sample(G, rng(), None, {"prompt": ["a red circle"], "prompt_fine": "a blue square"})[0]
    assert (styled - base).abs().max() > 1e-4 and (fine - base).abs().max() > 1e-4


def test_interpolations_end_at_their_endpoints():
    G = tiny_generator()
    z0, z1 = torch.randn(16), torch.randn(16)
    frames = giga.interpolate_latents(G, z0, z1, "a red circle", steps=4)
    assert frames.shape == (4, 3, 16, 16)
    noise = giga._ConstNoise()
    with torch.no_grad():
        text = G.encode_text(["a red circle"])
        end = G.synthesis(G.map(z1[None], text), text, noise)[16]
    torch.testing.assert_close(frames[-1:], end, rtol=1e-4, atol=1e-5)
    prompts = giga.interpolate_prompts(G, z0, "a red circle", "a blue square on a dark background", steps=3)
    with torch.no_grad():
        text = G.encode_text(["a red circle"])
        start = G.synthesis(G.map(z0[None], text), text, noise)[16]
    torch.testing.assert_close(prompts[:1], start, rtol=1e-4, atol=1e-5)
    assert (prompts[1] - prompts[0]).abs().max() > 1e-4


def test_upsampler_output_size_and_conditioning():
    torch.manual_seed(0)
    U = nets.build(
        "gigagan-upsampler",
        scale=4,
        down=2,
        channels=16,
        z_dim=8,
        w_dim=16,
        num_kernels=2,
        head_dim=8,
        text=TEXT,
        in_resolution=8,
    )
    torch.nn.init.normal_(U.torgb.conv.bank)  # trained-looking: at 0 (its init) the output is the base path
    low = torch.rand(2, 3, 8, 8) * 2 - 1
    prompts = ["a red circle", "a blue square"]
    out = U(low, prompts=prompts)
    assert out.shape == (2, 3, 32, 32)
    assert U(torch.zeros(1, 3, 16, 12), prompts=["x"]).shape == (1, 3, 64, 48)  # fully convolutional
    torch.testing.assert_close(U(low, prompts=prompts), out)  # z defaults to 0; noise strengths start at 0
    assert (U(low, prompts=prompts[::-1]) - out).abs().max() > 1e-4  # text conditions the output
    assert (U(low.flip(-1), prompts=prompts) - out).abs().max() > 1e-3  # so does the low-res image
    assert (U(low, torch.randn(2, 8), prompts=prompts) - out).abs().max() > 1e-4  # and z
    with pytest.raises(ValueError, match="divide by 4"):
        U(torch.zeros(1, 3, 10, 10), prompts=["x"])
    plain = nets.build("gigagan-upsampler", scale=2, channels=8, z_dim=4, w_dim=8, num_kernels=2, head_dim=8)
    assert plain(low).shape == (2, 3, 16, 16)
    # The network predicts a residual over bilinear upsampling: with tRGB silenced, that is all that is left.
    with torch.no_grad():
        plain.torgb.conv.bank.zero_()
        plain.torgb.bias.zero_()
        torch.testing.assert_close(plain(low), F.interpolate(low, scale_factor=2, mode="bilinear"))


def _tiny_config(arch="gigagan", **extra):
    config = {
        "arch": arch,
        "g_ch": 8,
        "d_ch": 8,
        "z_dim": 8,
        "w_dim": 16,
        "text_dim": 16,
        "text_depth": 1,
        "kernels": 2,
        "attn_res": "8",
        "data": "shapes:16?count=64",
    }
    config.update(extra)
    return config


def test_objective_steps_and_build_model_matches_the_sampled_player():
    from genzoo.data import load_dataset
    from genzoo.train.data import collate, to_batch

    dataset = load_dataset("shapes:16?count=64")
    for arch in ("gigagan", "gigagan-upsampler"):
        config = _tiny_config(arch, upsampler_text=True)
        objective = giga.build_objective(config, dataset)
        assert config["net"] and config["sampled_player"] == "G" and config["arch"] == arch
        raw = collate([(*dataset[i], i) for i in range(4)])
        batch = to_batch(raw, dataset.captions, torch.device("cpu"))
        for player, step in (("D", 0), ("G", 1)):
            result = objective.loss(player, batch, step)
            result.loss.backward()
            assert math.isfinite(float(result.loss.detach()))
        if arch == "gigagan":
            assert "D/r1" in objective.loss("D", batch, 0).logs and config["net"]["default_prompts"]
            # the vocabulary is the captions' words, saved with the net, so a loaded G tokenizes alike
            vocab = config["net"]["text"]["vocab"]
            assert {"square", "blue", "circle", "red"} <= set(vocab) and len(set(vocab)) == len(vocab)
            assert config["match_negatives"] == "rolled,shape,color,size,position"
            logs = objective.loss("D", batch, 1).logs
            assert "D/mismatch" in logs and any(k.startswith("D/mismatch_") for k in logs)
        model = giga.build_model(config)
        assert model.state_dict().keys() == objective.players["G"].state_dict().keys()


def test_bad_configs_raise_user_errors():
    from genzoo.data import load_dataset
    from genzoo.errors import UserError

    dataset = load_dataset("shapes:16?count=8")
    with pytest.raises(UserError, match="--loss hinge"):
        giga.build_objective(_tiny_config(loss="hinge"), dataset)
    with pytest.raises(UserError, match="--match-negatives"):
        giga.build_objective(_tiny_config(match_negatives="rolled,mood"), dataset)
    with pytest.raises(UserError, match="--text-tokenizer"):
        giga.build_objective(_tiny_config(text_tokenizer="bpe"), dataset)
    with pytest.raises(UserError, match="--degrade"):
        giga.build_objective(_tiny_config("gigagan-upsampler", degrade=1.5), dataset)
    with pytest.raises(UserError, match="--lpips-weight"):
        giga.build_objective(_tiny_config("gigagan-upsampler", lpips_weight=1.0), dataset)
    with pytest.raises(UserError, match="--upsample-scale 3"):
        giga.build_objective(_tiny_config("gigagan-upsampler", upsample_scale=3), dataset)
    with pytest.raises(UserError, match="--text-encoder"):
        giga.build_objective(_tiny_config(text_encoder="bert"), dataset)
    with pytest.raises(UserError, match="captioned"):
        giga.build_objective(_tiny_config(), type("NoCaptions", (), {"resolution": 16, "captions": None})())


def test_l2_self_attention_matches_the_distance_formula():
    from genzoo.nets.gigagan import L2SelfAttention

    torch.manual_seed(0)
    attn = L2SelfAttention(16, head_dim=8)
    with torch.no_grad():
        attn.gain.fill_(1.0)
    x = torch.randn(2, 16, 3, 4)
    b, c, h, w = x.shape
    y = attn.norm(x)
    qk = attn.qk(y).reshape(b, 2, 8, h * w).transpose(2, 3)  # tied queries and keys
    v = attn.v(y).reshape(b, 2, 8, h * w).transpose(2, 3)
    logits = -torch.cdist(qk, qk).pow(2) / math.sqrt(8)  # -||q_i - k_j||^2 / sqrt(d)
    out = (logits.softmax(-1) @ v).transpose(2, 3).reshape(b, c, h, w)
    torch.testing.assert_close(attn(x), x + attn.out(out), rtol=1e-4, atol=1e-5)


def test_truncation_pulls_w_to_the_prompt_mean():
    G = tiny_generator()
    text = G.encode_text(["a red circle", "a red circle", "a blue square"])
    z = torch.randn(3, 16)
    with torch.no_grad():
        w0, w1 = G.map(z, text, truncation=0.0), G.map(z, text, truncation=1.0)
        half = G.map(z, text, truncation=0.5)
    torch.testing.assert_close(w0[0], w0[1])  # same prompt: one centre whatever z
    assert (w0[0] - w0[2]).abs().max() > 1e-4  # the centre depends on the prompt
    torch.testing.assert_close(half, (w0 + w1) / 2, rtol=1e-4, atol=1e-5)


def test_minibatch_stddev_matches_the_group_formula():
    from genzoo.nets.gigagan import minibatch_stddev

    x = torch.randn(8, 3, 4, 4, dtype=torch.float64)
    out = minibatch_stddev(x, group_size=4)
    assert out.shape == (8, 4, 4, 4) and torch.equal(out[:, :3], x)
    # StyleGAN's grouping: sample i is in group i mod (N / G) with the samples N/G, 2N/G, ... apart
    for i in range(8):
        group = x[[j for j in range(8) if j % 2 == i % 2]]
        expected = group.var(0, unbiased=False).add(1e-8).sqrt().mean()
        torch.testing.assert_close(out[i, 3], expected.expand(4, 4))
    # 7 samples: groups {0, 2, 4, 6} and {1, 3, 5}, never a group of one
    odd = minibatch_stddev(x[:7], group_size=4)
    for i in range(7):
        group = x[[j for j in range(7) if j % 2 == i % 2]]
        expected = group.var(0, unbiased=False).add(1e-8).sqrt().mean()
        torch.testing.assert_close(odd[i, 3], expected.expand(4, 4))


def test_cmap_head_is_a_pure_projection_onto_the_mapped_text():
    D = tiny_discriminator(head="cmap")
    prompts = ["a red circle", "a blue square", "a green cross", "a yellow triangle"]
    images = torch.randn(4, 3, 16, 16)
    out = D(images, prompts=prompts)
    assert set(out) == {(8, 4), (16, 8), (16, 4)} and all(v.shape == (4,) for v in out.values())
    assert all(not torch.allclose(out[k], D(images, prompts=prompts[::-1])[k]) for k in out)
    # The logit is <h, cmap> / sqrt(cmap_dim): a zero condition map gives exactly zero (no
    # unconditional term), where the projection head keeps its linear(f) term.
    with torch.no_grad():
        D.cmap.text_proj.weight.zero_()
        D.cmap.text_proj.bias.zero_()
    assert all(torch.equal(v, torch.zeros(4)) for v in D(images, prompts=prompts).values())
    plain = tiny_discriminator()
    with torch.no_grad():
        for head in plain.heads.values():
            head.proj.weight.zero_()
            head.proj.bias.zero_()
    assert all(v.abs().sum() > 0 for v in plain(images, prompts=prompts).values())
    with pytest.raises(ValueError, match="cmap"):
        tiny_discriminator(head="cmap", text=None)
    with pytest.raises(ValueError, match="head"):
        tiny_discriminator(head="patch")


def test_d_head_option_builds_and_steps():
    from genzoo.data import load_dataset
    from genzoo.errors import UserError
    from genzoo.train.data import collate, to_batch

    dataset = load_dataset("shapes:16?count=64")
    config = _tiny_config(d_head="cmap")
    objective = giga.build_objective(config, dataset)
    assert config["d_head"] == "cmap" and objective.players["D"].head == "cmap"
    batch = to_batch(collate([(*dataset[i], i) for i in range(4)]), dataset.captions, torch.device("cpu"))
    for player, step in (("D", 0), ("G", 1)):
        result = objective.loss(player, batch, step)
        result.loss.backward()
        assert math.isfinite(float(result.loss.detach()))
    assert giga.build_objective(_tiny_config(), dataset).players["D"].head == "projection"
    with pytest.raises(UserError, match="--d-head"):
        giga.build_objective(_tiny_config(d_head="patch"), dataset)
    with pytest.raises(UserError, match="--d-head cmap"):
        giga.build_objective(_tiny_config("gigagan-upsampler", d_head="cmap"), dataset)


def test_discriminator_stage_pooling_and_norm_options():
    from genzoo.nets.gigagan import DiscriminatorStage, lrelu

    torch.manual_seed(0)
    x = torch.randn(3, 4, 8, 8, dtype=torch.float64)
    stage = DiscriminatorStage(4, 6, attention=False, head_dim=8, pool="max").double()
    y = stage.conv1(lrelu(stage.conv0(lrelu(x))))
    expected = (F.max_pool2d(y, 2) + F.avg_pool2d(stage.skip(x), 2)) / math.sqrt(2)
    torch.testing.assert_close(stage(x), expected)
    batch = DiscriminatorStage(4, 6, attention=False, head_dim=8, norm="batch").double()
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in batch.modules()) == 2
    with pytest.raises(ValueError, match="norm"):
        tiny_discriminator(norm="layer")


def test_he_init_gives_the_leaky_relu_variance_and_zero_biases():
    from genzoo.nets.gigagan import he_init_

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1)
    he_init_(conv)
    n, fan_in = conv.weight.numel(), 64 * 9
    expected = 2 / ((1 + 0.2**2) * fan_in)  # He et al. 2015, Eq. 10 with slope 0.2
    # the sample variance of n normal draws has relative standard error sqrt(2 / (n - 1)); allow 5 of them
    assert abs(float(conv.weight.detach().double().var()) / expected - 1) < 5 * math.sqrt(2 / (n - 1))
    assert torch.count_nonzero(conv.bias) == 0


def test_discriminator_he_init_reaches_every_conv_but_not_the_text_encoder():
    torch_d, he_d = tiny_discriminator(), tiny_discriminator(init="he")
    for part in ("from_rgb", "stages", "heads"):
        convs = [m for m in getattr(he_d, part).modules() if isinstance(m, torch.nn.Conv2d)]
        assert convs and all(m.bias is None or torch.count_nonzero(m.bias) == 0 for m in convs)
    assert torch.count_nonzero(torch_d.from_rgb["16"].bias) > 0  # PyTorch's default stays the default
    assert not torch.equal(torch_d.stages["16"].conv0.weight, he_d.stages["16"].conv0.weight)
    for (name, a), b in zip(torch_d.text.named_parameters(), he_d.text.parameters()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="init"):
        tiny_discriminator(init="xavier")


def test_d_norm_and_pool_options_build_and_step():
    from genzoo.data import load_dataset
    from genzoo.errors import UserError
    from genzoo.train.data import collate, to_batch

    dataset = load_dataset("shapes:16?count=64")
    config = _tiny_config(d_norm="batch", d_pool="max")
    objective = giga.build_objective(config, dataset)
    D = objective.players["D"]
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in D.modules())
    assert all(stage.pool is F.max_pool2d for stage in D.stages.values())
    batch = to_batch(collate([(*dataset[i], i) for i in range(4)]), dataset.captions, torch.device("cpu"))
    for player, step in (("D", 0), ("G", 1)):
        result = objective.loss(player, batch, step)
        result.loss.backward()
        assert math.isfinite(float(result.loss.detach()))
    with pytest.raises(UserError, match="--d-norm"):
        giga.build_objective(_tiny_config(d_norm="layer"), dataset)
    with pytest.raises(UserError, match="--d-pool"):
        giga.build_objective(_tiny_config(d_pool="median"), dataset)
    config = _tiny_config(d_init="he")
    D = giga.build_objective(config, dataset).players["D"]
    assert config["d_init"] == "he" and torch.count_nonzero(D.from_rgb["16"].bias) == 0
    assert giga.build_objective(_tiny_config(), dataset).players["D"].from_rgb["16"].bias.abs().sum() > 0
    with pytest.raises(UserError, match="--d-init: expected one of torch, he"):
        giga.build_objective(_tiny_config(d_init="xavier"), dataset)
