"""The bridge that makes a discrete (ADM/iDDPM) network an EDM denoiser, and its classifier a classifier
of σ-form images: the iDDPM preconditioning (EDM Table 1) on the model's own σ grid, so every sampler of
:mod:`genzoo.diffusion.samplers` and every guidance applies to it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from genzoo.diffusion.discrete import CondFn, DiscreteDiffusion
from genzoo.diffusion.guidance import ClassifierGuidance
from genzoo.diffusion.precond import IDDPMDenoiser
from genzoo.errors import UserError


class DiscreteDenoiser(IDDPMDenoiser):
    """An ADM/iDDPM network as an EDM denoiser: the iDDPM preconditioning (EDM Table 1) on the σ grid
    of the model's own schedule, u_{T−1−t} = √((1−ᾱ_t)/ᾱ_t), so linear-schedule and 4000-step models work
    too (for the cosine schedule with T = 1000 this is EDM's grid). c_noise is the network's timestep,
    ×1000/T when the model was trained with ``rescale_timesteps``."""

    def __init__(self, model: nn.Module, diffusion: DiscreteDiffusion):
        if diffusion.num_timesteps != diffusion.original_num_steps:
            raise ValueError("wrap the unrespaced process")
        super().__init__(model, M=1)
        self.diffusion = diffusion
        self.M = diffusion.num_timesteps
        self.rescale_timesteps = diffusion.rescale_timesteps
        u = torch.cat([diffusion.sigmas().flip(0), torch.zeros(1, dtype=torch.float64)])
        self.register_buffer("u", u.to(torch.float32), persistent=False)
        self.sigma_min = float(self.u[self.M - 1])
        self.sigma_max = float(self.u[0])

    def scalings(self, sigma):
        c_skip, c_out, c_in, c_noise = super().scalings(sigma)
        if self.rescale_timesteps:
            c_noise = c_noise * (1000.0 / self.M)
        return c_skip, c_out, c_in, c_noise


class DiscreteClassifier(nn.Module):
    """An ADM noise-aware classifier ``classifier(x_t, t) -> logits`` as ``classifier(x, σ) -> logits`` for
    EDM-form inputs x = x₀ + σ·n: x_t = x/√(1+σ²) at the step whose σ_t is nearest."""

    def __init__(self, classifier: nn.Module, diffusion: DiscreteDiffusion):
        super().__init__()
        self.classifier = classifier
        self.diffusion = diffusion
        self.register_buffer("sigmas", diffusion.sigmas().to(torch.float32), persistent=False)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1).expand(x.shape[0])
        index = (sigma[:, None] - self.sigmas.to(x.device)[None]).abs().argmin(dim=1)
        x_t = x / (1 + sigma**2).sqrt().reshape(-1, *([1] * (x.ndim - 1)))
        return self.classifier(x_t.float(), self.diffusion.model_timesteps(index))


def classifier_cond_fn(
    classifier: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    scale: float,
    labels: torch.Tensor | None = None,
) -> CondFn:
    """``cond_fn`` for ADM guidance: scale·∇_{x_t} log p(y | x_t, t) of a noise-aware classifier (the gradient
    is :meth:`genzoo.diffusion.guidance.ClassifierGuidance.log_prob_grad`, t as the noise input)."""
    guide = ClassifierGuidance(None, classifier, scale)

    def cond_fn(x: torch.Tensor, timesteps: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        y = labels if labels is not None else y
        if y is None:
            raise UserError(
                "--classifier: classifier guidance needs class labels (--class or a class-conditional model)"
            )
        return guide.log_prob_grad(x.float(), timesteps, y) * scale

    return cond_fn


# ----------------------------------------------------------------------------- the diffusion family's tables


def discrete_from_config(discrete: dict[str, Any]) -> DiscreteDiffusion:
    """The unrespaced process a model directory's ``config["discrete"]`` describes."""
    return DiscreteDiffusion.create(
        int(discrete.get("steps", 1000)),
        discrete.get("noise_schedule", "linear"),
        "",
        learn_sigma=bool(discrete.get("learn_sigma", True)),
        sigma_small=bool(discrete.get("sigma_small", False)),
        predict=discrete.get("predict", "eps"),
        loss=discrete.get("loss", "hybrid"),
        rescale_timesteps=bool(discrete.get("rescale_timesteps", False)),
        rescale_learned_sigmas=bool(discrete.get("rescale_learned_sigmas", False)),
    )


def discrete_denoiser(net: nn.Module, discrete: dict[str, Any]) -> DiscreteDenoiser:
    """An ADM/iDDPM network with its process, as the diffusion family's denoiser."""
    denoiser = DiscreteDenoiser(net, discrete_from_config(discrete))
    denoiser.default_respacing = str(discrete.get("respacing") or "")
    return denoiser
