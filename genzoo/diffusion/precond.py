"""Preconditioning: a network plus (c_skip, c_out, c_in, c_noise) makes a denoiser (EDM, Table 1).

``D(x, σ) = c_skip(σ)·x + c_out(σ)·F(c_in(σ)·x, c_noise(σ))``. The network ``F`` is any registered
diffusion network (``forward(x, noise_labels, class_labels=None, **cond)``); the formulas live here only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from genzoo.errors import UserError
from genzoo.nets.edm2 import MPConv, MPFourier
from genzoo.nets.labels import label_indices, one_hot_labels

#: names accepted for a network's dtype (EDM's ``use_fp16`` is ``"float16"`` on CUDA)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _as_batch_sigma(sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """σ as float32 [N, 1, ..., 1] matching x (a scalar σ is broadcast to the batch)."""
    sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1)
    if sigma.numel() == 1:
        sigma = sigma.expand(x.shape[0])
    if sigma.numel() != x.shape[0]:
        raise ValueError(f"sigma has {sigma.numel()} values for a batch of {x.shape[0]}")
    return sigma.reshape(-1, *([1] * (x.ndim - 1)))


class Denoiser(nn.Module):
    """Base class: subclasses give ``scalings(σ) -> (c_skip, c_out, c_in, c_noise)``.

    The wrapped network is ``self.model``; its weights are saved under the prefix ``network_attr``
    (``model.*``; EDM2's ``unet.*`` as in the official pickles). Class labels may be
    int indices ``[B]`` or EDM's one-hot rows ``[B, label_dim]``: they are converted to the form the
    network takes (its ``label_input`` attribute: ``"one_hot"`` or, by default, ``"index"``).

    ``net_dtype`` (None = float32) is the dtype the network's input is cast to; ``fp16_on_cuda`` runs it in
    float16 on CUDA devices only, as EDM's ``use_fp16=True`` networks do. The preconditioning and the
    output are float32 either way.
    """

    sigma_min: float = 0.0
    sigma_max: float = float("inf")
    sigma_data: float = 0.5
    network_attr: str = "model"
    net_dtype: torch.dtype | None = None
    fp16_on_cuda: bool = False

    def __init__(self, model: nn.Module):
        super().__init__()
        setattr(self, self.network_attr, model)  # registered by nn.Module.__setattr__
        self.img_channels = int(getattr(model, "in_channels", 0)) or None
        self.label_dim = int(getattr(model, "label_dim", 0))
        # Classifier-free guidance's null label: EDM's one-hot networks take the zero row; an index
        # embedding needs a row for it, which released ADM checkpoints do not have.
        one_hot = getattr(model, "label_input", "index") == "one_hot"
        indexed_null = bool(getattr(model, "takes_null_label", False))
        self.takes_null_label = bool(self.label_dim) and (one_hot or indexed_null)
        self.resolution = getattr(model, "resolution", None)

    @property
    def model(self) -> nn.Module:
        """The wrapped network."""
        return self._modules[self.network_attr]

    def scalings(self, sigma: torch.Tensor) -> tuple[Any, Any, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def round_sigma(self, sigma: torch.Tensor | float) -> torch.Tensor:
        """The noise level the network is actually evaluated at (identity for continuous σ)."""
        return torch.as_tensor(sigma)

    def network_dtype(self, device: torch.device) -> torch.dtype:
        """The dtype the network runs in on ``device``."""
        if self.net_dtype is not None:
            return self.net_dtype
        return torch.float16 if self.fp16_on_cuda and device.type == "cuda" else torch.float32

    def network_labels(self, class_labels: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
        """``class_labels`` (indices or one-hot rows) in the form the network takes."""
        if class_labels is None or not self.label_dim:
            return None  # an unconditional network (e.g. EDM2's unconditional guide) takes no labels
        if getattr(self.model, "label_input", "index") == "one_hot":
            return one_hot_labels(class_labels, self.label_dim, x.shape[0], x.device)
        if class_labels.is_floating_point() and class_labels.ndim == 2:
            return label_indices(class_labels, self.label_dim)
        return class_labels

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, class_labels: torch.Tensor | None = None,
                **cond: Any) -> torch.Tensor:
        """D(x; σ) = c_skip·x + c_out·F(c_in·x; c_noise) (EDM eq. 7), computed in float32."""
        return self.denoised_and_c_noise(x, sigma, class_labels, **cond)[0]

    def denoised_and_c_noise(self, x: torch.Tensor, sigma: torch.Tensor | float,
                             class_labels: torch.Tensor | None = None,
                             **cond: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(D(x; σ), c_noise): :meth:`forward` and the noise label it fed the network."""
        x = x.to(torch.float32)
        sigma = _as_batch_sigma(sigma, x)
        c_skip, c_out, c_in, c_noise = self.scalings(sigma)
        labels = self.network_labels(class_labels, x)
        net_input = (c_in * x).to(self.network_dtype(x.device))
        out = self.model(net_input, c_noise.flatten(), class_labels=labels, **cond)
        out = out.to(torch.float32)
        if out.ndim > 1 and out.shape[1] > x.shape[1]:
            out = out[:, :x.shape[1]]  # learned-variance networks: the first channels are the prediction
        return c_skip * x + c_out * out, c_noise


def vp_sigma(t: torch.Tensor | float, beta_d: float = 19.9, beta_min: float = 0.1) -> torch.Tensor:
    """σ(t) = √(exp(½β_d t² + β_min t) − 1) (EDM Table 1, VP), in float64."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return ((0.5 * beta_d * t ** 2 + beta_min * t).exp() - 1).sqrt()


def vp_sigma_inv(sigma: torch.Tensor | float, beta_d: float = 19.9, beta_min: float = 0.1) -> torch.Tensor:
    """t(σ) = (√(β_min² + 2β_d·ln(1 + σ²)) − β_min)/β_d, the inverse of :func:`vp_sigma` (EDM Table 1)."""
    sigma = torch.as_tensor(sigma)
    root = (beta_min ** 2 + 2 * beta_d * (1 + sigma ** 2).log()).sqrt()
    return (root - beta_min) / beta_d


class VPDenoiser(Denoiser):
    """Variance preserving (Song et al. 2021): σ(t) = √(exp(½β_d t² + β_min t) − 1), c_noise = (M−1)·t(σ)."""

    def __init__(self, model: nn.Module, beta_d: float = 19.9, beta_min: float = 0.1, M: int = 1000,
                 epsilon_t: float = 1e-5):
        super().__init__(model)
        self.beta_d, self.beta_min = float(beta_d), float(beta_min)
        self.M, self.epsilon_t = int(M), float(epsilon_t)
        self.sigma_min = float(self.sigma(epsilon_t))
        self.sigma_max = float(self.sigma(1.0))
        self.sigma_data = 0.5

    def sigma(self, t: torch.Tensor | float) -> torch.Tensor:
        """σ(t) of the VP SDE (EDM Table 1)."""
        return vp_sigma(t, self.beta_d, self.beta_min)

    def sigma_inv(self, sigma: torch.Tensor | float) -> torch.Tensor:
        """t(σ), the inverse of :meth:`sigma`."""
        return vp_sigma_inv(sigma, self.beta_d, self.beta_min)

    def scalings(self, sigma):
        return 1, -sigma, 1 / (sigma ** 2 + 1).sqrt(), (self.M - 1) * self.sigma_inv(sigma)


class VEDenoiser(Denoiser):
    """Variance exploding (Song et al. 2021): c_out = σ, c_noise = ln(½σ), σ ∈ [0.02, 100]."""

    def __init__(self, model: nn.Module, sigma_min: float = 0.02, sigma_max: float = 100.0):
        super().__init__(model)
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.sigma_data = 0.5

    def scalings(self, sigma):
        return 1, sigma, torch.ones_like(sigma), (0.5 * sigma).log()


def iddpm_sigmas(M: int = 1000, C_1: float = 0.001, C_2: float = 0.008) -> torch.Tensor:
    """The iDDPM noise levels u_0 > ... > u_M = 0 (EDM Table 1, cosine ᾱ of Nichol & Dhariwal 2021), float64.

    u_{j−1} = √((u_j² + 1) / max(ᾱ(j−1)/ᾱ(j), C₁) − 1) with ᾱ(j) = sin²(½π j / (M (C₂ + 1))).
    """
    def alpha_bar(j: int) -> float:
        return math.sin(0.5 * math.pi * j / M / (C_2 + 1)) ** 2

    u = np.zeros(M + 1, dtype=np.float64)
    for j in range(M, 0, -1):
        u[j - 1] = math.sqrt((u[j] ** 2 + 1) / max(alpha_bar(j - 1) / alpha_bar(j), C_1) - 1)
    return torch.from_numpy(u)


class IDDPMDenoiser(Denoiser):
    """Improved DDPM (Nichol & Dhariwal 2021): a discrete σ grid u_j; c_noise = M − 1 − j for the nearest u_j.

    Networks with learned variance output 2·C channels; the first C are used. With ``stored_grid`` the
    grid is part of the weights (key ``u``): EDM's ``iDDPMPrecond`` computes it in float32, which differs
    from the float64 grid by up to 5e-4 relative at the low end, so imported models keep the file's.
    """

    def __init__(self, model: nn.Module, C_1: float = 0.001, C_2: float = 0.008, M: int = 1000,
                 stored_grid: bool = False):
        super().__init__(model)
        self.C_1, self.C_2, self.M = float(C_1), float(C_2), int(M)
        self.register_buffer("u", iddpm_sigmas(M, C_1, C_2).to(torch.float32), persistent=bool(stored_grid))
        self.sigma_data = 0.5
        self.grid_changed()
        if stored_grid:
            self.register_load_state_dict_post_hook(lambda module, _keys: module.grid_changed())

    def grid_changed(self) -> None:
        """Update σ_min = u_{M−1} and σ_max = u_0 from the grid (after loading a stored one)."""
        self.sigma_min = float(self.u[self.M - 1])
        self.sigma_max = float(self.u[0])

    def sigma_index(self, sigma: torch.Tensor | float) -> torch.Tensor:
        """Index j of the grid value u_j nearest to each σ."""
        sigma = torch.as_tensor(sigma)
        flat = sigma.to(self.u.device, torch.float32).reshape(-1, 1)
        return (flat - self.u.reshape(1, -1)).abs().argmin(dim=1).reshape(sigma.shape).to(sigma.device)

    def round_sigma(self, sigma: torch.Tensor | float) -> torch.Tensor:
        """Snap σ to the nearest u_j (keeping σ's dtype and device)."""
        sigma = torch.as_tensor(sigma)
        index = self.sigma_index(sigma)
        return self.u.to(sigma.device)[index.flatten()].to(sigma.dtype).reshape(sigma.shape)

    def scalings(self, sigma):
        c_noise = self.M - 1 - self.sigma_index(sigma).to(torch.float32)
        return 1, -sigma, 1 / (sigma ** 2 + 1).sqrt(), c_noise


class EDMDenoiser(Denoiser):
    """EDM (Karras et al. 2022, Table 1): c_skip = σ_d²/(σ²+σ_d²), c_out = σσ_d/√(σ²+σ_d²),
    c_in = 1/√(σ²+σ_d²), c_noise = ¼ ln σ."""

    def __init__(self, model: nn.Module, sigma_data: float = 0.5, sigma_min: float = 0.0,
                 sigma_max: float = float("inf")):
        super().__init__(model)
        self.sigma_data = float(sigma_data)
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)

    def scalings(self, sigma):
        sd = self.sigma_data
        c_skip = sd ** 2 / (sigma ** 2 + sd ** 2)
        c_out = sigma * sd / (sigma ** 2 + sd ** 2).sqrt()
        c_in = 1 / (sd ** 2 + sigma ** 2).sqrt()
        return c_skip, c_out, c_in, sigma.log() / 4


class EDM2Denoiser(EDMDenoiser):
    """EDM2's ``Precond`` (Karras et al. 2024): EDM's scalings with c_noise = ¼ ln σ around the
    magnitude-preserving UNet (stored as ``unet``), plus the learned uncertainty u(σ) =
    ``logvar_linear(logvar_fourier(c_noise))`` used by the training loss (EDM2 eq. 21).

    ``use_fp16`` runs the network in float16 on CUDA as the official code does (``fp16_on_cuda``);
    elsewhere float32.
    """

    network_attr = "unet"

    def __init__(self, model: nn.Module, sigma_data: float = 0.5, logvar_channels: int = 128,
                 use_fp16: bool = False, sigma_min: float = 0.0, sigma_max: float = float("inf")):
        super().__init__(model, sigma_data=sigma_data, sigma_min=sigma_min, sigma_max=sigma_max)
        self.fp16_on_cuda = bool(use_fp16)
        self.logvar_fourier = MPFourier(logvar_channels)
        self.logvar_linear = MPConv(logvar_channels, 1, [])

    def logvar(self, c_noise: torch.Tensor) -> torch.Tensor:
        """u(σ) as [N, 1, 1, 1] from c_noise = ¼ ln σ."""
        return self.logvar_linear(self.logvar_fourier(c_noise.flatten())).reshape(-1, 1, 1, 1)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, class_labels: torch.Tensor | None = None,
                return_logvar: bool = False, **cond: Any):
        """D(x; σ) (EDM eq. 7) in float32; with ``return_logvar`` the pair (D, u(σ))."""
        denoised, c_noise = self.denoised_and_c_noise(x, sigma, class_labels, **cond)
        return (denoised, self.logvar(c_noise)) if return_logvar else denoised


PRECONDITIONINGS: dict[str, type[Denoiser]] = {
    "vp": VPDenoiser,
    "ve": VEDenoiser,
    "iddpm": IDDPMDenoiser,
    "edm": EDMDenoiser,
    "edm2": EDM2Denoiser,
}


def build_denoiser(precond: str, net: nn.Module, **kw: Any) -> Denoiser:
    """Wrap ``net`` with the preconditioning named ``precond`` (vp, ve, iddpm, edm, edm2)."""
    if precond not in PRECONDITIONINGS:
        raise UserError(f"--precond: expected one of {', '.join(PRECONDITIONINGS)}, got {precond!r}")
    return PRECONDITIONINGS[precond](net, **kw)
