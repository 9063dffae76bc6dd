"""Latents for generators: the truncation trick and latent / class interpolation."""

from __future__ import annotations

import math

import torch

from genzoo.errors import UserError
from genzoo.seeds import StackedRandomGenerator

#: how ``--truncation ψ`` shapes z: "resample" (BigGAN: N(0, 1) with values beyond ±ψ redrawn) or
#: "scaled" (the BigGAN-deep TF-Hub / PyTorch port: ψ · N(0, 1) truncated to ±2)
TRUNCATION_STYLES = ("resample", "scaled")


def truncated_normal_from_uniform(u: torch.Tensor, bound: float) -> torch.Tensor:
    """Map uniforms in [0, 1) to N(0, 1) truncated to [−bound, bound] by the inverse CDF.

    Same law as redrawing every value with |z| > bound (BigGAN §3.1), in one pass whatever the bound.
    """
    if not bound > 0:
        raise UserError(f"--truncation: expected a positive threshold, got {bound}")
    u = u.double()
    lo = torch.special.ndtr(torch.tensor(-float(bound), dtype=torch.float64))
    z = torch.special.ndtri(lo + u * (1 - 2 * lo))
    return z.clamp(-bound, bound).float()


def sample_latents(
    rng: StackedRandomGenerator, dim: int, truncation: float | None = None, style: str = "resample"
) -> torch.Tensor:
    """One latent per seed: [len(rng), dim]; truncated at ψ = ``truncation`` when given.

    Every value obeys |z| ≤ ψ ("resample") or |z| ≤ 2ψ ("scaled"). With no truncation z ~ N(0, I).
    """
    if style not in TRUNCATION_STYLES:
        raise UserError(f"truncation style: expected one of {', '.join(TRUNCATION_STYLES)}, got {style!r}")
    n = len(rng)
    if truncation is None:
        if style == "scaled":  # the port's samples are always truncated; ψ = 1 by default
            return truncated_normal_from_uniform(rng.rand([n, dim]), 2.0).to(rng.device)
        return rng.randn([n, dim])
    truncation = float(truncation)
    if not (truncation > 0 and math.isfinite(truncation)):
        raise UserError(f"--truncation: expected a positive number, got {truncation}")
    u = rng.rand([n, dim])
    if style == "scaled":
        return (truncation * truncated_normal_from_uniform(u, 2.0)).to(rng.device)
    return truncated_normal_from_uniform(u, truncation).to(rng.device)


def lerp(a: torch.Tensor, b: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` points on the segment from a to b (inclusive): [steps, *a.shape]."""
    t = torch.linspace(0, 1, steps, dtype=a.dtype, device=a.device).view(-1, *([1] * a.ndim))
    return a.unsqueeze(0) + t * (b - a).unsqueeze(0)


def slerp_items(z0: torch.Tensor, z1: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of noise per item: sin((1−α)θ)/sin θ·z₀ + sin(αθ)/sin θ·z₁ (Shoemake 1985);
    exactly z₀ at α = 0 and z₁ at α = 1."""
    a, b = z0.flatten(1).double(), z1.flatten(1).double()
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    theta = cos.clamp(-1, 1).acos()
    alpha = alpha.double().to(z0.device)
    small = theta.abs() < 1e-6
    safe = torch.where(small, torch.ones_like(theta), theta)
    w0 = torch.where(small, 1 - alpha, torch.sin((1 - alpha) * safe) / torch.sin(safe))
    w1 = torch.where(small, alpha, torch.sin(alpha * safe) / torch.sin(safe))
    shape = (-1, *([1] * (z0.ndim - 1)))
    return (w0.reshape(shape) * z0.double() + w1.reshape(shape) * z1.double()).to(z0.dtype)


def slerp(a: torch.Tensor, b: torch.Tensor, steps: int) -> torch.Tensor:
    """Spherical interpolation (Shoemake 1985) between latents a and b (1-D): [steps, dim].

    Keeps the norm profile of Gaussian latents, which linear interpolation shrinks midway.
    """
    t = torch.linspace(0, 1, steps, dtype=torch.float64, device=a.device)
    return slerp_items(a.expand(steps, -1), b.expand(steps, -1), t)


def class_interpolation(class_a: int, class_b: int, num_classes: int, steps: int) -> torch.Tensor:
    """Soft class vectors from one-hot(a) to one-hot(b): [steps, num_classes].

    BigGAN generators accept these as ``class_labels`` (float) and embed them linearly, which
    interpolates the shared class embedding (Brock et al. 2019, Fig. 8).
    """
    for name, c in (("class_a", class_a), ("class_b", class_b)):
        if not 0 <= c < num_classes:
            raise UserError(f"{name}: expected a class in [0, {num_classes}), got {c}")
    eye = torch.eye(num_classes)
    return lerp(eye[class_a], eye[class_b], steps)
