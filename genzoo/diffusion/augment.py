"""EDM's non-leaking augmentation (Karras et al. 2022, App. F.2; after ADA, Karras et al. 2020).

Each transform is applied to each image with probability p (times its multiplier); the network is
told which transform was applied through ``augment_labels`` and sampled with all-zero labels, so
the augmentations do not leak into generated images. The geometric transforms compose into one
affine map resampled with reflection padding. Labels (``AUGMENT_DIM`` = 9): x-flip, y-flip, log2 of
the isotropic scale, (cos θ − 1, sin θ) of the rotation, the anisotropic scaling (log2 s·cos 2φ,
log2 s·sin 2φ) and the fractional translation (tx, ty).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from genzoo.seeds import uniform

Tensor = torch.Tensor
AUGMENT_DIM = 9


class AugmentPipe:
    """``pipe(images, rng=None) -> (augmented images, augment_labels [N, 9])``.

    Defaults are EDM's CIFAR-10 setting: x-flips always possible (multiplier 1e8), y-flip, scale,
    arbitrary rotation, anisotropic scaling and fractional translation at multiplier 1.
    """

    def __init__(self, p: float = 0.12, xflip: float = 1e8, yflip: float = 1, scale: float = 1,
                 rotate_frac: float = 1, aniso: float = 1, translate_frac: float = 1, scale_std: float = 0.2,
                 aniso_std: float = 0.2, translate_std: float = 0.125):
        self.p = float(p)
        self.mult = dict(xflip=xflip, yflip=yflip, scale=scale, rotate_frac=rotate_frac, aniso=aniso,
                         translate_frac=translate_frac)
        self.scale_std, self.aniso_std, self.translate_std = scale_std, aniso_std, translate_std

    def _applied(self, name: str, n: int, uniform: Tensor) -> Tensor:
        return uniform < min(self.p * self.mult[name], 1.0)

    def __call__(self, images: Tensor, rng: Any = None) -> tuple[Tensor, Tensor]:
        n, device = images.shape[0], images.device
        # Per-sample draws (columns): 6 "is applied" coins, 2 flip coins, 6 transform parameters.
        u = uniform(rng, [n, 14], device)
        g = torch.erfinv(2 * u[:, 8:] - 1).clamp(-6, 6) * math.sqrt(2)  # standard normals from uniforms
        zero = torch.zeros(n, device=device)
        xflip = torch.where(self._applied("xflip", n, u[:, 0]) & (u[:, 6] < 0.5), 1.0, 0.0)
        yflip = torch.where(self._applied("yflip", n, u[:, 1]) & (u[:, 7] < 0.5), 1.0, 0.0)
        log_scale = torch.where(self._applied("scale", n, u[:, 2]), g[:, 0] * self.scale_std, zero)
        theta = torch.where(self._applied("rotate_frac", n, u[:, 3]), (2 * u[:, 9] - 1) * math.pi, zero)
        log_aniso = torch.where(self._applied("aniso", n, u[:, 4]), g[:, 2] * self.aniso_std, zero)
        phi = (2 * u[:, 11] - 1) * math.pi
        on_t = self._applied("translate_frac", n, u[:, 5])
        tx = torch.where(on_t, g[:, 4] * self.translate_std, zero)
        ty = torch.where(on_t, g[:, 5] * self.translate_std, zero)

        # Where content moves, in normalised coordinates [-1, 1]; grid_sample needs the inverse map.
        eye = torch.eye(3, device=device).expand(n, 3, 3)
        m = eye.clone()
        m[:, 0, 0] = 1 - 2 * xflip
        m[:, 1, 1] = 1 - 2 * yflip
        m = m @ _scale(2 ** log_scale, 2 ** log_scale) @ _rotate(theta)
        m = m @ _rotate(phi) @ _scale(2 ** log_aniso, 2 ** -log_aniso) @ _rotate(-phi)
        m = m @ _translate(2 * tx, 2 * ty)
        inverse = torch.linalg.inv(m)[:, :2]
        grid = F.affine_grid(inverse.to(images.dtype), list(images.shape), align_corners=False)
        out = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        identity = (xflip == 0) & (yflip == 0) & (log_scale == 0) & (theta == 0) & (log_aniso == 0) & ~on_t
        out = torch.where(identity[:, None, None, None], images, out)  # untouched images stay bit-exact
        labels = torch.stack([xflip, yflip, log_scale, theta.cos() - 1, theta.sin(),
                              log_aniso * (2 * phi).cos(), log_aniso * (2 * phi).sin(), tx, ty], dim=1)
        return out, labels


def _scale(sx: Tensor, sy: Tensor) -> Tensor:
    m = torch.eye(3, device=sx.device).repeat(sx.shape[0], 1, 1)
    m[:, 0, 0], m[:, 1, 1] = sx, sy
    return m


def _rotate(theta: Tensor) -> Tensor:
    m = torch.eye(3, device=theta.device).repeat(theta.shape[0], 1, 1)
    c, s = theta.cos(), theta.sin()
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c
    return m


def _translate(tx: Tensor, ty: Tensor) -> Tensor:
    m = torch.eye(3, device=tx.device).repeat(tx.shape[0], 1, 1)
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m
