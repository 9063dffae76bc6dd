"""Full-reference fidelity of restored images (super-resolution): PSNR and SSIM, one value per image.

Images are float [N, C, H, W] on a common scale whose peak-to-peak range is ``data_range`` (2 for images
in [-1, 1], genzoo's convention). Used by the GigaGAN upsampler benchmark; no weights needed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def psnr(x: torch.Tensor, reference: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image: 10·log10(range² / MSE) in dB (MSE over all pixels)."""
    mse = (x.double() - reference.double()).square().flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse.clamp_min(1e-20))


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Normalised 1-D Gaussian of ``size`` taps (SSIM's window: 11 taps, σ 1.5)."""
    offsets = torch.arange(size, dtype=dtype) - (size - 1) / 2
    w = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return w / w.sum()


def ssim(x: torch.Tensor, reference: torch.Tensor, data_range: float = 2.0, window: int = 11,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Structural similarity per image (Wang et al. 2004, Eq. 13), averaged over channels and the valid
    positions of a Gaussian window (11 taps, σ 1.5; the window shrinks to the image for smaller images):
    SSIM = (2μxμy + C1)(2σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2)), C1 = (k1·L)², C2 = (k2·L)²."""
    if x.shape != reference.shape or x.ndim != 4:
        raise ValueError(f"ssim: expected two [N, C, H, W] tensors of one shape, got {tuple(x.shape)} and "
                         f"{tuple(reference.shape)}")
    size = min(window, x.shape[-1], x.shape[-2])
    g = gaussian_window(size, sigma)
    c = x.shape[1]
    kernel_h = g.view(1, 1, 1, -1).expand(c, 1, 1, size)
    kernel_v = g.view(1, 1, -1, 1).expand(c, 1, size, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, kernel_h, groups=c), kernel_v, groups=c)

    a, b = x.double(), reference.double()
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1)
