"""PSNR and SSIM against their closed forms."""

import math

import pytest
import torch

from genzoo.metrics.fidelity import gaussian_window, psnr, ssim


def test_psnr_closed_form():
    x = torch.zeros(2, 3, 8, 8, dtype=torch.float64)
    y = x.clone()
    y[0] += 0.1  # MSE 0.01 -> 10 log10(4 / 0.01)
    y[1] += 0.5  # MSE 0.25
    expected = torch.tensor([10 * math.log10(4 / 0.01), 10 * math.log10(4 / 0.25)], dtype=torch.float64)
    torch.testing.assert_close(psnr(y, x), expected)
    torch.testing.assert_close(psnr(y, x, data_range=1.0), expected - 10 * math.log10(4))


def test_ssim_of_constant_images_and_of_an_image_with_itself():
    eps = torch.finfo(torch.float64).eps * 64
    x = torch.rand(3, 3, 16, 16, dtype=torch.float64) * 2 - 1
    torch.testing.assert_close(ssim(x, x), torch.ones(3, dtype=torch.float64), atol=eps, rtol=0)
    # Constant images a and b: no variance, so SSIM = (2ab + C1) / (a² + b² + C1) (the contrast and
    # structure terms are C2 / C2 = 1).
    a, b = 0.3, -0.2
    c1 = (0.01 * 2) ** 2
    const = [torch.full((1, 1, 12, 12), v, dtype=torch.float64) for v in (a, b)]
    expected = torch.tensor([(2 * a * b + c1) / (a * a + b * b + c1)], dtype=torch.float64)
    torch.testing.assert_close(ssim(*const), expected, atol=1e-12, rtol=0)
    # noise lowers it below 1
    noisy = x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert bool((ssim(noisy, x) < 0.95).all())


def test_ssim_window_and_shape_checks():
    g = gaussian_window(11, 1.5)
    torch.testing.assert_close(g.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert torch.equal(g, g.flip(0)) and int(g.argmax()) == 5
    with pytest.raises(ValueError, match="ssim"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))
