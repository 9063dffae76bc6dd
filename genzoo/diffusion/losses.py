"""Training losses of the EDM framework (Karras et al. 2022, Table 1 "Training" rows).

Each loss draws a noise level σ per image, noises the (optionally augmented) image, and returns the
weighted squared error λ(σ)·‖D(y + σn; σ) − y‖² per element. Random draws come from ``rng`` (the
engine's per-sample :class:`~genzoo.seeds.StackedRandomGenerator`) when given, so a sample's noise
does not depend on how the batch is split.
"""

from __future__ import annotations

from typing import Any

import torch

from genzoo.diffusion.discrete import LOSSES as DISCRETE_LOSSES
from genzoo.diffusion.samplers import vp_sigma
from genzoo.errors import UserError
from genzoo.seeds import normal, normal_like, uniform

Tensor = torch.Tensor


def _rand(n: int, device: torch.device, rng: Any = None) -> Tensor:
    return uniform(rng, [n], device)


def _randn(n: int, device: torch.device, rng: Any = None) -> Tensor:
    return normal(rng, [n], device)


def _randn_like(x: Tensor, rng: Any = None) -> Tensor:
    return normal_like(rng, x)


class DiffusionLoss:
    """Base class: :meth:`sample_sigma` draws σ, :meth:`weight` is λ(σ)."""

    def sample_sigma(self, n: int, device: torch.device, rng: Any = None) -> Tensor:
        raise NotImplementedError

    def weight(self, sigma: Tensor) -> Tensor:
        raise NotImplementedError

    def __call__(self, net: Any, images: Tensor, class_labels: Tensor | None = None, augment_pipe: Any = None,
                 rng: Any = None) -> Tensor:
        """λ(σ)·(D(y + σn; σ) − y)², elementwise ([N, C, H, W]); y is the augmented image."""
        sigma = self.sample_sigma(images.shape[0], images.device, rng).reshape(-1, *[1] * (images.ndim - 1))
        cond = {}
        y = images
        if augment_pipe is not None:
            y, cond["augment_labels"] = augment_pipe(images, rng=rng)
        noise = _randn_like(y, rng) * sigma
        return self.per_element(net, y + noise, sigma, y, class_labels, cond)

    def per_element(self, net: Any, noisy: Tensor, sigma: Tensor, y: Tensor, class_labels: Tensor | None,
                    cond: dict[str, Any]) -> Tensor:
        """λ(σ)·(D(y + σn; σ) − y)²."""
        denoised = net(noisy, sigma.flatten(), class_labels, **cond)
        return self.weight(sigma) * (denoised - y) ** 2


class VPLoss(DiffusionLoss):
    """VP (Song et al. 2021): t ~ U[ε_t, 1], σ = σ(t), λ = 1/σ²."""

    def __init__(self, beta_d: float = 19.9, beta_min: float = 0.1, epsilon_t: float = 1e-5):
        self.beta_d, self.beta_min, self.epsilon_t = beta_d, beta_min, epsilon_t

    def sample_sigma(self, n, device, rng=None):
        t = 1 + _rand(n, device, rng) * (self.epsilon_t - 1)
        return vp_sigma(t, self.beta_d, self.beta_min).to(torch.float32)

    def weight(self, sigma):
        return 1 / sigma ** 2


class VELoss(DiffusionLoss):
    """VE (Song et al. 2021): ln σ ~ U[ln σ_min, ln σ_max], λ = 1/σ²."""

    def __init__(self, sigma_min: float = 0.02, sigma_max: float = 100.0):
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def sample_sigma(self, n, device, rng=None):
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** _rand(n, device, rng)

    def weight(self, sigma):
        return 1 / sigma ** 2


class EDMLoss(DiffusionLoss):
    """EDM: ln σ ~ N(P_mean, P_std²), λ = (σ² + σ_d²)/(σ·σ_d)² (unit effective weight, Sec. 5)."""

    def __init__(self, P_mean: float = -1.2, P_std: float = 1.2, sigma_data: float = 0.5):
        self.P_mean, self.P_std, self.sigma_data = P_mean, P_std, sigma_data

    def sample_sigma(self, n, device, rng=None):
        return (_randn(n, device, rng) * self.P_std + self.P_mean).exp()

    def weight(self, sigma):
        return (sigma ** 2 + self.sigma_data ** 2) / (sigma * self.sigma_data) ** 2


class EDM2Loss(EDMLoss):
    """EDM2 (Karras et al. 2024, eqs. 14–16, 21): EDM's σ distribution and weight λ(σ) with a learned
    uncertainty u(σ) from the denoiser's logvar head: λ(σ)/e^{u(σ)}·(D − y)² + u(σ).

    Defaults are the official loss's (ln σ ~ N(−0.4, 1²), the ImageNet-512 latent setting; the
    ImageNet-64 pixel models use −0.8, 1.6). Needs a denoiser with ``return_logvar`` (``--precond edm2``).
    """

    def __init__(self, P_mean: float = -0.4, P_std: float = 1.0, sigma_data: float = 0.5):
        super().__init__(P_mean=P_mean, P_std=P_std, sigma_data=sigma_data)

    def per_element(self, net, noisy, sigma, y, class_labels, cond):
        if cond:
            raise UserError(f"--loss edm2: the EDM2 network takes no {', '.join(sorted(cond))} "
                            "(use --augment 0)")
        denoised, logvar = net(noisy, sigma.flatten(), class_labels, return_logvar=True)
        return self.weight(sigma) / logvar.exp() * (denoised - y) ** 2 + logvar


#: every ``--loss`` of the diffusion family: EDM's, and iDDPM's of the discrete process (hybrid, vlb)
LOSSES = {"vp": VPLoss, "ve": VELoss, "edm": EDMLoss, "edm2": EDM2Loss, **DISCRETE_LOSSES}


def build_loss(name: str, **kw: Any) -> DiffusionLoss:
    """The training loss named ``name`` (``vp``, ``ve``, ``edm``, ``edm2``, ...)."""
    if name not in LOSSES:
        raise UserError(f"--loss: expected one of {', '.join(LOSSES)}, got {name!r}")
    return LOSSES[name](**kw)


def drop_labels(labels: Tensor, p: float, null_label: int, rng: Any = None) -> Tensor:
    """Replace each label by the null label with probability ``p`` (classifier-free guidance training,
    Ho & Salimans 2021); missing labels (−1) become the null label too."""
    labels = torch.where(labels < 0, null_label, labels)
    if p <= 0:
        return labels
    drop = _rand(labels.shape[0], labels.device, rng) < p
    return torch.where(drop, null_label, labels)
