"""Zero-shot editing (genzoo.edit): known data is kept exactly, for consistency and diffusion denoisers."""

import pytest
import torch
import torch.nn as nn

from genzoo import edit
from genzoo.consistency import ConsistencyModel, sample
from genzoo.diffusion.precond import EDMDenoiser
from genzoo.errors import UserError
from genzoo.seeds import StackedRandomGenerator


class TinyNet(nn.Module):
    def __init__(self, channels=3, resolution=8):
        super().__init__()
        self.resolution, self.in_channels, self.out_channels = resolution, channels, channels
        self.label_dim = 0
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x, noise_labels, class_labels=None):
        return torch.tanh(self.conv(x)) + 0.1 * noise_labels.reshape(-1, 1, 1, 1)


def _models():
    torch.manual_seed(0)
    return [ConsistencyModel(TinyNet()).eval(), EDMDenoiser(TinyNet()).eval()]


def _images(n=2, seed=1):
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("model", _models(), ids=["consistency", "diffusion"])
def test_inpaint_keeps_pixels_outside_the_mask_exactly(model):
    images = _images()
    mask = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    mask[..., 2:6, 3:7] = True
    out = edit.inpaint(model, images, mask, StackedRandomGenerator("cpu", [0, 1]), steps=4)
    keep = ~mask.expand_as(images)
    assert torch.equal(out[keep], images[keep])
    assert not torch.allclose(out[~keep], images[~keep])


@pytest.mark.parametrize("model", _models(), ids=["consistency", "diffusion"])
def test_colorize_keeps_the_luma(model):
    images = _images()
    gray = edit.luma(images).expand(-1, 3, -1, -1) / 0.9999  # R = G = B, so its luma equals the value
    out = edit.colorize(model, images, StackedRandomGenerator("cpu", [0, 1]), steps=3)
    assert torch.allclose(edit.luma(out), edit.luma(images), atol=1e-5)
    assert out.std(dim=1).mean() > 1e-3  # chroma was generated, not copied
    basis = edit.luma_basis()
    assert torch.allclose(basis.T @ basis, torch.eye(3), atol=1e-6)
    assert torch.allclose(edit.luma(edit.colorize(model, gray[:, :1], StackedRandomGenerator("cpu", [0, 1]),
                                                  steps=2)), edit.luma(gray), atol=1e-5)


@pytest.mark.parametrize("model", _models(), ids=["consistency", "diffusion"])
def test_superres_keeps_the_patch_means(model):
    low = _images(seed=2)[..., :2, :2]
    out = edit.superres(model, low, 4, StackedRandomGenerator("cpu", [0, 1]), steps=3)
    assert out.shape == (2, 3, 8, 8)
    assert torch.allclose(edit.patch_means(out, 4), low, atol=1e-5)
    with pytest.raises(UserError, match="--factor 2"):
        edit.superres(model, low, 2, StackedRandomGenerator("cpu", [0, 1]))


def test_interpolation_ends_are_the_seed_samples():
    cm, dm = _models()
    out = edit.interpolate(cm, 5, 9, [0.0, 0.5, 1.0], steps=40, ts=[0, 20, 39])
    for row, seed in ((0, 5), (2, 9)):
        expected, _ = sample(cm, StackedRandomGenerator("cpu", [seed]).randn_like, (1, 3, 8, 8), steps=40,
                             ts=[0, 20, 39])
        assert torch.allclose(out[row:row + 1], expected, atol=1e-6)
    assert not torch.allclose(out[1], out[0]) and not torch.allclose(out[1], out[2])
    from genzoo.diffusion.samplers import edm_sampler

    out = edit.interpolate(dm, 5, 9, [0.0, 1.0], steps=4)
    z = StackedRandomGenerator("cpu", [9]).randn((1, 3, 8, 8))
    expected = edm_sampler(dm, z, num_steps=4).float().clamp(-1, 1)
    assert torch.allclose(out[1:], expected, atol=1e-5)


def test_slerp_norm_and_ends():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1, 3, 8, 8, generator=g), torch.randn(1, 3, 8, 8, generator=g)
    alphas = torch.tensor([0.0, 0.3, 1.0])
    z = edit.slerp(a.expand(3, -1, -1, -1), b.expand(3, -1, -1, -1), alphas)
    assert torch.equal(z[0], a[0]) and torch.equal(z[2], b[0])
    # spherical: the norm stays between the end norms (a linear path would shrink it)
    norms = z.flatten(1).norm(dim=1)
    assert norms[1] > 0.95 * min(norms[0], norms[2])


def test_denoise_and_stroke():
    cm, dm = _models()
    images = _images()
    noisy = edit.noise_image(images, 0.5, StackedRandomGenerator("cpu", [0, 1]))
    out = edit.denoise(cm, noisy, 0.5, StackedRandomGenerator("cpu", [0, 1]))
    assert torch.allclose(out, cm(noisy, 0.5).clamp(-1, 1))  # one step of f at the given σ
    out = edit.denoise(dm, noisy, 0.5, StackedRandomGenerator("cpu", [0, 1]), steps=3)
    assert out.shape == images.shape and out.abs().max() <= 1
    a = edit.stroke(cm, images, 2.0, StackedRandomGenerator("cpu", [0, 1]), steps=2)
    b = edit.stroke(cm, images[1:], 2.0, StackedRandomGenerator("cpu", [1]), steps=2)
    assert torch.allclose(a[1:], b, atol=1e-6)  # a result depends on its seed only
    with pytest.raises(UserError, match="--sigma"):
        edit.stroke(cm, images, 100.0, StackedRandomGenerator("cpu", [0, 1]))
    with pytest.raises(UserError, match="the model makes 8x8"):
        edit.denoise(cm, torch.zeros(1, 3, 16, 16), 0.5, StackedRandomGenerator("cpu", [0]))
