"""The adversarial pieces every GAN-trained objective shares: losses, gradient penalties, the D step.

Used by the GAN family (BigGAN, R3GAN, GigaGAN and its upsampler) and by the consistency family's
optional adversarial term, so each formula is written once, below both.

Losses take discriminator logits (any shape) and return a scalar mean; ``d_loss``/``g_loss`` pick
one by its ``--loss`` name. :func:`discriminator_loss` is one discriminator step's loss: the chosen
loss plus R1 on the reals and R2 on the fakes, averaged over the keys when D returns a dict of
logits (GigaGAN's multi-scale predictions).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from genzoo.errors import UserError

LOSSES = ("hinge", "ns", "rpgan")

Logits = torch.Tensor | dict


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Parameters of ``module`` left out of the autograd graph built inside the block (gradients still
    flow through it to its inputs)."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


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
    f = softplus): E[softplus(D(G(z)) − D(x))] over the (real, fake) pairs of the batch."""
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


def gradient_penalty(logits: torch.Tensor, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """E[‖∇ₓ D(x)‖²] at ``images`` (Mescheder et al. 2018, eq. 9 without the γ/2): R1 at real images,
    R2 (R3GAN eq. 3) at generated ones. ``images`` (a tensor, or the levels of an image pyramid, whose
    gradients count together) must have ``requires_grad`` set before D saw them."""
    inputs = [images] if isinstance(images, torch.Tensor) else list(images)
    grads = torch.autograd.grad(logits.sum(), inputs, create_graph=True)
    return torch.stack([g.square().flatten(1).sum(1) for g in grads]).sum(0).mean()


r1_penalty = gradient_penalty  # on real images
r2_penalty = gradient_penalty  # on generated images


def _keys(real_logits: Logits) -> list:
    return list(real_logits) if isinstance(real_logits, dict) else [None]


def _at(logits: Logits, key) -> torch.Tensor:
    return logits if key is None else logits[key]


def scale_mean(fn, *logits: Logits) -> torch.Tensor:
    """``fn`` of the logits, averaged over the keys of a multi-scale D's dict (the tensor itself else)."""
    return torch.stack([fn(*(_at(x, k) for x in logits)) for k in _keys(logits[0])]).mean()


def _summed(logits: Logits) -> torch.Tensor:
    """One logit per image: the sum over a multi-scale D's predictions (their gradient covers all of them)."""
    return torch.stack(list(logits.values())).sum(0) if isinstance(logits, dict) else logits


def _mean_logit(logits: Logits) -> float:
    return float(_summed(logits).detach().mean() / (len(logits) if isinstance(logits, dict) else 1))


def discriminator_loss(
    name: str,
    real_logits: Logits,
    fake_logits: Logits,
    real: torch.Tensor | Sequence[torch.Tensor] | None = None,
    fake: torch.Tensor | Sequence[torch.Tensor] | None = None,
    r1_gamma: float = 0.0,
    r2_gamma: float = 0.0,
    penalty_scale: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """One D step's loss and logs: the loss ``name`` + γ₁/2·R1(real) + γ₂/2·R2(fake), the penalties times
    ``penalty_scale`` (lazy regularisation, StyleGAN2: the interval). A gamma > 0 needs the images D saw,
    with ``requires_grad`` set; a penalty is skipped when its gamma is 0 (or its images are None)."""
    loss = scale_mean(lambda r, f: d_loss(name, r, f), real_logits, fake_logits)
    logs = {"D/loss": float(loss.detach()), "D/real": _mean_logit(real_logits),
            "D/fake": _mean_logit(fake_logits)}
    penalties = (("r1", r1_gamma, real_logits, real), ("r2", r2_gamma, fake_logits, fake))
    for tag, gamma, logits, images in penalties:
        if gamma > 0 and images is not None:
            penalty = gradient_penalty(_summed(logits), images)
            logs[f"D/{tag}"] = float(penalty.detach())
            loss = loss + 0.5 * gamma * penalty_scale * penalty
    return loss, logs


def generator_loss(name: str, fake_logits: Logits, real_logits: Logits | None = None) -> torch.Tensor:
    """G's loss ``name`` averaged over a multi-scale D's keys (rpgan pairs each fake with a real)."""
    if name == "rpgan":
        if real_logits is None:
            raise ValueError("the rpgan generator loss needs D's logits on real images")
        return scale_mean(lambda f, r: g_loss(name, f, r), fake_logits, real_logits)
    return scale_mean(lambda f: g_loss(name, f), fake_logits)
