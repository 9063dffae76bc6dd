"""TrigFlow and the continuous-time consistency loss of sCM (Lu & Song 2024, "Simplifying, Stabilizing and
Scaling Continuous-Time Consistency Models").

TrigFlow: x_t = cos t·x₀ + sin t·z, z ~ N(0, σ_d²I), t ∈ [0, π/2]; it is EDM's x_σ = x₀ + σn scaled by
cos t with σ = σ_d·tan t (sCM Sec. 2). The consistency function is
f(x_t, t) = cos t·x_t − sin t·σ_d·F(x_t/σ_d, t).
With F(y, t) = −F_EDM(y, ¼ ln σ), f in EDM coordinates (x_σ = x_t / cos t) is exactly EDM's preconditioned
denoiser (c_skip = cos²t, c_out = σ_d sin t, c_in = cos t/σ_d): a genzoo EDM network is an sCM student
as it stands, and :class:`TrigFlowModel` samples with the consistency family's samplers unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn as nn

from genzoo.consistency.model import ConsistencyModel
from genzoo.seeds import global_rng_state, set_global_rng_state

#: sCM's tangent normalisation constant c in g / (‖g‖ + c)
TANGENT_NORM_C = 0.1
#: sCM's proposal of t: σ_d·tan t = e^τ, τ ~ N(P_mean, P_std²) (training; distillation uses −0.8, 1.6)
SCM_P_MEAN, SCM_P_STD = -1.0, 1.4


def edm_sigma(t: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """sCM Sec. 2: the EDM noise level of TrigFlow time t, σ = σ_d·tan t."""
    return sigma_data * torch.tan(t)


def trigflow_time(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """The TrigFlow time of EDM noise level σ, t = arctan(σ/σ_d)."""
    return torch.atan(sigma / sigma_data)


def to_edm(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_σ = x_t / cos t (EDM's unscaled noisy sample for the same x₀ and noise)."""
    return x_t / torch.cos(t).reshape(-1, *([1] * (x_t.ndim - 1)))


def from_edm(x_sigma: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = cos t · x_σ."""
    return x_sigma * torch.cos(t).reshape(-1, *([1] * (x_sigma.ndim - 1)))


class AdaptiveWeight(nn.Module):
    """sCM's learned weighting w_φ(t): a linear layer on Fourier features of ¼ ln σ(t) (used only by the loss:
    L = e^{w}·‖·‖²/D − w, as EDM2's learned log-variance)."""

    def __init__(self, features: int = 16):
        super().__init__()
        self.register_buffer("freqs", torch.randn(features, generator=torch.Generator().manual_seed(0)))
        self.register_buffer("phases", torch.rand(features, generator=torch.Generator().manual_seed(1)))
        self.linear = nn.Linear(features, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        features = math.sqrt(2) * torch.cos(2 * math.pi * (c_noise.reshape(-1, 1) * self.freqs + self.phases))
        return self.linear(features).reshape(-1)


class TrigFlowModel(ConsistencyModel):
    """An sCM consistency model. As a Denoiser (EDM coordinates) it is EDM's preconditioning, so
    ``model(x_σ, σ)`` = f(cos t·x_σ, t); :meth:`F` is the TrigFlow network output F_θ(x_t/σ_d, t) and
    ``weight`` the adaptive loss weighting (saved with the model, unused in sampling)."""

    def __init__(self, model: nn.Module, sigma_min: float = 0.002, sigma_max: float = 80.0,
                 sigma_data: float = 0.5, time_scale: float = 0.25, rho: float = 7.0):
        super().__init__(model, sigma_min, sigma_max, sigma_data, time_scale, rho)
        self.weight = AdaptiveWeight()

    def scalings(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """EDM's (c_skip, c_out, c_in, c_noise) = (cos²t, σ_d sin t, cos t/σ_d, ¼ ln σ) with σ = σ_d tan t."""
        s2 = sigma ** 2 + self.sigma_data ** 2
        return (self.sigma_data ** 2 / s2, sigma * self.sigma_data / s2.sqrt(), 1 / s2.sqrt(),
                self.time_scale * sigma.log())

    def c_noise(self, t: torch.Tensor) -> torch.Tensor:
        return self.time_scale * torch.log(edm_sigma(t, self.sigma_data))

    def F(self, y: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """F_θ(y, t) with y = x_t/σ_d: minus the network's EDM output at c_noise = ¼ ln(σ_d tan t)."""
        return -self.model(y, self.c_noise(t), class_labels)

    def f(self, x_t: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """sCM eq. (the TrigFlow consistency function) f(x_t, t) = cos t·x_t − sin t·σ_d·F(x_t/σ_d, t)."""
        shape = (-1,) + (1,) * (x_t.ndim - 1)
        cos, sin = torch.cos(t).reshape(shape), torch.sin(t).reshape(shape)
        return cos * x_t - sin * self.sigma_data * self.F(x_t / self.sigma_data, t, class_labels)


def teacher_velocity(teacher: Any, x_t: torch.Tensor, t: torch.Tensor, sigma_data: float,
                     labels: torch.Tensor | None) -> torch.Tensor:
    """dx_t/dt of the teacher's PF-ODE in TrigFlow: (cos t·x_t − D̂)/sin t with D̂ the teacher's x₀ estimate
    at (x_σ = x_t/cos t, σ = σ_d tan t) (from x_t = cos t·x₀ + sin t·z and dx_t/dt = cos t·z − sin t·x₀)."""
    shape = (-1,) + (1,) * (x_t.ndim - 1)
    denoised = teacher(to_edm(x_t, t), edm_sigma(t, sigma_data), labels).to(x_t.dtype)
    return (torch.cos(t).reshape(shape) * x_t - denoised) / torch.sin(t).reshape(shape)


def normalise_tangent(g: torch.Tensor, c: float = TANGENT_NORM_C) -> torch.Tensor:
    """sCM Sec. 4.2: g / (‖g‖ + c), the norm per item over all its elements."""
    norm = g.flatten(1).norm(dim=1).reshape(-1, *([1] * (g.ndim - 1)))
    return g / (norm + c)


def scm_tangent(student: TrigFlowModel, x_t: torch.Tensor, t: torch.Tensor, dxt_dt: torch.Tensor,
                labels: torch.Tensor | None, warmup: float = 1.0, normalise: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(F_θ⁻, g): sCM Algorithm 1's stop-gradient network output and tangent
    g = −cos²t·(σ_d F_θ⁻ − dx_t/dt) − r·(cos t sin t·x_t + σ_d·Ḟ), Ḟ = cos t sin t·dF_θ⁻/dt from one
    forward-mode JVP (dual numbers) along cos t sin t·(dx_t/dt / σ_d, 1), r the warm-up ratio; normalised
    by :func:`normalise_tangent` unless ``normalise`` is False. With r = 1, g = cos t·df_θ⁻/dt, which is
    zero where f_θ⁻ is constant along the ODE (the exact consistency function)."""
    shape = (-1,) + (1,) * (x_t.ndim - 1)
    cos, sin = torch.cos(t).reshape(shape), torch.sin(t).reshape(shape)
    sd = student.sigma_data
    # fp32 without autocast: autocast casts the weights but not functorch's dual inputs (a dtype clash on
    # CPU), and the tangent is a small difference that low precision would swamp (sCM Sec. 5)
    # torch.autograd.forward_ad rather than torch.func.jvp: the same dual numbers without functorch's
    # per-op wrapping, 3× faster on the 16 px UNet on CPU (1.6 s against 5.2 s of CPU for a batch of 32)
    dtype = torch.promote_types(x_t.dtype, torch.float32)
    with torch.no_grad(), _jvp_attention(), torch.autocast(x_t.device.type, enabled=False), fwAD.dual_level():
        y = fwAD.make_dual(x_t.to(dtype) / sd, (cos * sin * dxt_dt / sd).to(dtype))
        s = fwAD.make_dual(t.to(dtype), (torch.cos(t) * torch.sin(t)).to(dtype))
        F_minus, dF_dt = fwAD.unpack_dual(student.F(y, s, labels).to(dtype))
        F_minus = F_minus.clone()
        dF_dt = torch.zeros_like(F_minus) if dF_dt is None else dF_dt.clone()
    # dF_dt already carries the cos t·sin t factor (the JVP's tangents do): it is not multiplied again
    g = -cos ** 2 * (sd * F_minus - dxt_dt) - warmup * (cos * sin * x_t + sd * dF_dt)
    return F_minus, normalise_tangent(g) if normalise else g


def _jvp_attention() -> Any:
    """scaled_dot_product_attention's math kernel: the fused (flash / memory-efficient) kernels have no
    forward-mode derivative on every backend; the math path is differentiable in both modes everywhere."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH)


def scm_loss(student: TrigFlowModel, x_t: torch.Tensor, t: torch.Tensor, dxt_dt: torch.Tensor,
             labels: torch.Tensor | None, warmup: float = 1.0) -> torch.Tensor:
    """Per-item sCM loss (Algorithm 1): e^{w(t)}/D·‖F_θ − F_θ⁻ − g‖² − w(t), the network pass and the JVP
    pass sharing one dropout mask."""
    rng = global_rng_state(x_t.device)
    F_minus, g = scm_tangent(student, x_t, t, dxt_dt, labels, warmup)
    set_global_rng_state(rng, x_t.device)
    F_theta = student.F(x_t / student.sigma_data, t, labels).float()
    w = student.weight(student.c_noise(t).float())
    sq = (F_theta - F_minus.float() - g.float()).square().flatten(1).mean(1)
    return w.exp() * sq - w
