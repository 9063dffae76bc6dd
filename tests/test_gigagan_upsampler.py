"""The GigaGAN upsampler's training inputs (degradations) and its LPIPS term."""

import pytest
import torch
import torch.nn.functional as F

from genzoo import nets
from genzoo.errors import UserError
from genzoo.gan import gigagan as giga
from genzoo.train.objective import Batch

EPS64 = torch.finfo(torch.float64).eps


def test_gaussian_blur_is_a_normalised_separable_gaussian():
    x = torch.zeros(2, 1, 15, 15, dtype=torch.float64)
    x[:, :, 7, 7] = 1.0
    y = giga.gaussian_blur(x, torch.tensor([1.0, 0.0]))
    assert float(y[0].sum()) == pytest.approx(1.0, rel=64 * EPS64)  # mass kept (no reflection reached)
    r = torch.arange(-3, 4, dtype=torch.float64)
    g = torch.exp(-0.5 * r**2)
    g = g / g.sum()
    torch.testing.assert_close(y[0, 0, 4:11, 4:11], g[:, None] * g[None, :], rtol=64 * EPS64, atol=64 * EPS64)
    torch.testing.assert_close(y[1], x[1])  # sigma 0: untouched


def test_degrade_without_probability_is_area_downsampling_and_with_it_changes_inputs():
    hr = torch.rand(8, 3, 16, 16) * 2 - 1
    torch.testing.assert_close(giga.degrade(hr, 4, 0.0), F.adaptive_avg_pool2d(hr, 4))
    low = giga.degrade(hr, 4, 1.0, torch.Generator().manual_seed(0))
    assert low.shape == (8, 3, 4, 4) and low.abs().max() <= 1
    assert (low - F.adaptive_avg_pool2d(hr, 4)).abs().amax(dim=(1, 2, 3)).min() > 0  # every image degraded


def _upsampler_pair():
    torch.manual_seed(0)
    U = nets.build("gigagan-upsampler", scale=2, down=1, channels=8, z_dim=4, w_dim=8, num_kernels=1,
                   head_dim=8, in_resolution=4)
    D = nets.build("gigagan-discriminator", resolution=8, channel_base=64, channel_max=8, attn_res=(),
                   cond_channels=3)
    return U, D


def test_upsampler_objective_adds_the_lpips_term_and_refuses_it_without_weights():
    U, D = _upsampler_pair()
    with pytest.raises(UserError, match="--lpips-weights"):
        giga.UpsamplerObjective(U, D, lpips_weight=1.0)

    class HalfL1(torch.nn.Module):  # a stand-in perceptual distance with a closed form
        def forward(self, x, y):
            return 0.5 * (x - y).abs().flatten(1).mean(1)

    batch = Batch(images=torch.rand(2, 3, 8, 8) * 2 - 1, labels=torch.full((2,), -1))
    plain = giga.UpsamplerObjective(U, D, degrade=0.0)
    with_lpips = giga.UpsamplerObjective(U, D, degrade=0.0, lpips_weight=3.0, lpips=HalfL1())
    a, b = plain.loss("G", batch, 1), with_lpips.loss("G", batch, 1)
    assert b.logs["G/lpips"] == pytest.approx(0.5 * b.logs["G/l1"], rel=1e-5)  # fed [-1, 1], as LPIPS takes
    rest = float(b.loss.detach()) - b.logs["G/loss"] - 10 * b.logs["G/l1"]
    assert rest == pytest.approx(3 * b.logs["G/lpips"], rel=1e-4)
    assert "G/lpips" not in a.logs


def test_upsampler_encoder_keeps_the_feature_scale():
    # std 1/sqrt(fan_in) with lrelu's sqrt(2) gain: unit-variance inputs keep unit-scale features through
    # the encoder (PyTorch's default init shrinks them ~0.6x per conv, ~0.07 after the five convs here,
    # and the demodulated decoder then kept the residual near zero)
    torch.manual_seed(0)
    U = nets.build("gigagan-upsampler", scale=4, down=2, channels=64, num_kernels=2, in_resolution=16)
    with torch.no_grad():
        x = U.from_rgb(torch.randn(16, 3, 16, 16))
        assert 0.6 < float(x.std()) < 1.6
        for stage in U.encoder:
            y = stage(x)
            assert 0.6 < float(y.std() / x.std()) < 1.6
            x = F.avg_pool2d(y, 2)


@pytest.mark.parametrize("base", ["bicubic", "bilinear"])
def test_untrained_upsampler_is_exactly_its_base_interpolation(base):
    # the tRGB kernel starts at zero, so before training the output is the base path: bicubic (the default
    # of new runs) or bilinear (runs saved before --upsampler-base) interpolation of the input
    torch.manual_seed(0)
    U = nets.build("gigagan-upsampler", scale=4, down=2, channels=8, z_dim=4, w_dim=8, num_kernels=2,
                   head_dim=8, in_resolution=8, base=base).double()
    low = torch.rand(3, 3, 8, 8, dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        out = U(low, torch.randn(3, 4, dtype=torch.float64))
    expected = F.interpolate(low, scale_factor=4, mode=base, align_corners=False)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    # runs saved before the option have no "base" in their net config: they stay bilinear
    assert nets.build("gigagan-upsampler", scale=4, channels=8, in_resolution=8).base == "bilinear"


def test_upsampler_base_option_defaults_to_bicubic_and_refuses_others():
    assert giga.DEFAULTS["upsampler_base"] == "bicubic"
    assert giga.GigaGANTrainOptions.build({"upsampler_base": "bilinear"}).upsampler_base == "bilinear"
    with pytest.raises(UserError, match="--upsampler-base: expected one of bicubic, bilinear"):
        giga.GigaGANTrainOptions.build({"upsampler_base": "nearest"})
    with pytest.raises(ValueError, match="upsampler base must be one of bicubic, bilinear"):
        nets.build("gigagan-upsampler", scale=4, channels=8, in_resolution=8, base="nearest")


def test_the_residual_learns_beyond_the_base_path():
    # one Adam step on the L1 loss moves the output off the base path (the zero tRGB kernel gets a gradient)
    torch.manual_seed(0)
    U = nets.build("gigagan-upsampler", scale=2, down=1, channels=8, z_dim=4, w_dim=8, num_kernels=1,
                   head_dim=8, in_resolution=4, base="bicubic")
    hr = torch.rand(4, 3, 8, 8) * 2 - 1
    low = F.adaptive_avg_pool2d(hr, 4)
    opt = torch.optim.Adam(U.parameters(), lr=1e-2)
    (U(low) - hr).abs().mean().backward()
    assert float(U.torgb.conv.bank.grad.abs().max()) > 0
    opt.step()
    with torch.no_grad():
        assert float((U(low) - U.base_path(low)).abs().max()) > 0


def test_upsampler_latent_zero_trains_and_samples_with_z_zero():
    assert giga.DEFAULTS["upsampler_latent"] == "zero"
    with pytest.raises(UserError, match="--upsampler-latent: expected one of zero, random"):
        giga.GigaGANTrainOptions.build({"upsampler_latent": "gaussian"})
    with pytest.raises(ValueError, match="upsampler latent must be one of zero, random"):
        nets.build("gigagan-upsampler", scale=4, channels=8, in_resolution=8, latent="gaussian")
    low = (torch.rand(3, 3, 4, 4) * 255).to(torch.uint8)
    outputs = {}
    for latent in ("zero", "random"):
        torch.manual_seed(0)
        U = nets.build("gigagan-upsampler", scale=2, down=1, channels=8, z_dim=4, w_dim=8, num_kernels=2,
                       head_dim=8, in_resolution=4, latent=latent)
        torch.nn.init.normal_(U.torgb.conv.bank)  # a trained-looking tRGB, so z shows in the output
        seen = []
        U.register_forward_pre_hook(lambda module, args, seen=seen: seen.append(args[1]))
        D = nets.build("gigagan-discriminator", resolution=8, channel_base=64, channel_max=8, attn_res=(),
                       cond_channels=3)
        batch = Batch(images=torch.rand(2, 3, 8, 8) * 2 - 1, labels=torch.full((2,), -1))
        giga.UpsamplerObjective(U, D, degrade=0.0).loss("G", batch, 1)
        assert (seen[-1] is None) == (latent == "zero")  # None: the network's z = 0
        outputs[latent] = (giga.upsample(U, low, seeds=[0, 1, 2]), giga.upsample(U, low))
    with_seeds, without = outputs["zero"]
    torch.testing.assert_close(with_seeds, without)  # seeds fix noise only; the noise strengths start at 0
    with_seeds, without = outputs["random"]
    assert float((with_seeds - without).abs().max()) > 1e-3  # seeds draw z for a random-latent upsampler
