"""GAN losses and regularisers shared by BigGAN, R3GAN and GigaGAN.

Every function takes discriminator logits (any shape) and returns a scalar mean, so callers mix
them freely; ``d_loss``/``g_loss`` pick a loss by the ``--loss`` name.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F

from genzoo.errors import UserError

LOSSES = ("hinge", "ns", "rpgan")


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge loss of D (Lim & Ye 2017; BigGAN eq. in §2): E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge loss of G: -E[D(G(z))]."""
    return -fake_logits.mean()


def ns_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating D loss (Goodfellow et al. 2014): E[softplus(-D(x))] + E[softplus(D(G(z)))]."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def ns_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating loss of G: E[softplus(-D(G(z)))] = -E[log sigmoid(D(G(z)))]."""
    return F.softplus(-fake_logits).mean()


def rpgan_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Relativistic pairing loss of D (Jolicoeur-Martineau 2019; R3GAN, Huang et al. 2025, eq. 2 with
    f = softplus): E[softplus(D(G(z)) − D(x))] over (real, fake) pairs of the batch."""
    return F.softplus(fake_logits - real_logits).mean()


def rpgan_g_loss(fake_logits: torch.Tensor, real_logits: torch.Tensor) -> torch.Tensor:
    """Relativistic pairing loss of G, D's mirrored: E[softplus(D(x) − D(G(z)))]."""
    return F.softplus(real_logits - fake_logits).mean()


def check_loss_name(name: str) -> str:
    if name not in LOSSES:
        raise UserError(f"--loss: expected one of {', '.join(LOSSES)}, got {name!r}")
    return name


def d_loss(name: str, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The discriminator loss called ``name`` ("hinge", "ns" or "rpgan")."""
    losses = {"hinge": hinge_d_loss, "ns": ns_d_loss, "rpgan": rpgan_d_loss}
    return losses[check_loss_name(name)](real_logits, fake_logits)


def g_loss(name: str, fake_logits: torch.Tensor, real_logits: torch.Tensor | None = None) -> torch.Tensor:
    """The generator loss called ``name``; "rpgan" also needs D's logits on the paired real images."""
    if check_loss_name(name) == "rpgan":
        if real_logits is None:
            raise ValueError("the rpgan generator loss needs D's logits on real images")
        return rpgan_g_loss(fake_logits, real_logits)
    return (hinge_g_loss if name == "hinge" else ns_g_loss)(fake_logits)


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018, eq. 9 without the γ/2): E[‖∇ₓ D(x)‖²] on real images.

    ``real_images`` must have ``requires_grad`` set before D was applied to them.
    """
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return grad.square().flatten(1).sum(1).mean()


def r2_penalty(fake_logits: torch.Tensor, fake_images: torch.Tensor) -> torch.Tensor:
    """R2 (Mescheder et al. 2018; R3GAN eq. 3): E[‖∇ₓ D(x)‖²] on generated images, the same squared
    gradient norm as :func:`r1_penalty` taken at the fakes."""
    return r1_penalty(fake_logits, fake_images)


class _OrthoReg(torch.autograd.Function):
    """β‖W Wᵀ ⊙ (1 − I)‖²_F with the closed-form gradient 4β (W Wᵀ ⊙ (1 − I)) W."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, beta: float) -> torch.Tensor:
        w = weight.reshape(weight.shape[0], -1)
        off = w @ w.t()
        off.fill_diagonal_(0)
        ctx.save_for_backward(weight)
        ctx.beta = beta
        return beta * off.square().sum()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (weight,) = ctx.saved_tensors
        return grad_out * orthogonal_regularization_grad(weight, ctx.beta), None


def orthogonal_regularization_grad(weight: torch.Tensor, beta: float) -> torch.Tensor:
    """d/dW of β‖W Wᵀ ⊙ (1 − I)‖²_F = 4β (W Wᵀ ⊙ (1 − I)) W, with W the weight flattened to [out, fan_in]."""
    w = weight.reshape(weight.shape[0], -1)
    off = w @ w.t()
    off.fill_diagonal_(0)
    return (4.0 * beta * off @ w).reshape(weight.shape)


def orthogonal_regularization(weights: Iterable[torch.Tensor], beta: float) -> torch.Tensor:
    """BigGAN's modified orthogonal regularisation (Brock et al. 2019, eq. 3), summed over ``weights``.

    R_β(W) = β‖WᵀW ⊙ (1 − I)‖²_F with the filters of W as its columns: only the angles between
    filters are pushed towards orthogonality, not their norms. Tensors with fewer than 2 dims are skipped.
    """
    total = None
    for weight in weights:
        if weight.ndim < 2:
            continue
        term = _OrthoReg.apply(weight, float(beta))
        total = term if total is None else total + term
    if total is None:
        return torch.zeros(())
    return total
