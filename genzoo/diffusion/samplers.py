"""Samplers: small pure functions over a denoiser ``D(x, σ, class_labels)``.

Every sampler takes unit-variance ``latents`` and returns float64 samples at σ = 0. The number of
network evaluations (NFE) is reported one way everywhere: wrap the denoiser in
:class:`genzoo.nfe.NFECounter` (the counter cost measurements hook on too) and read ``counter.nfe``
afterwards (each call evaluates the whole batch once, so NFE is per image).

Noise levels follow EDM (Karras et al. 2022): ``x = s(t)·(x0 + σ(t)·n)``. :func:`edm_sampler` is
EDM's Algorithm 2 with the reference sampler's signature; :func:`ablation_sampler` is the general
form (time discretisation, schedule σ(t), scaling s(t), Euler/Heun, α) the paper's ablations use.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from genzoo.diffusion.precond import iddpm_sigmas, vp_sigma, vp_sigma_inv
from genzoo.errors import UserError
from genzoo.nfe import NFECounter  # noqa: F401  (re-exported: samplers.NFECounter)

Tensor = torch.Tensor
Labels = torch.Tensor | None
RandnLike = Callable[[Tensor], Tensor]


@runtime_checkable
class DenoiserLike(Protocol):
    """What samplers, guidance, distillation and the editors need of a model: D(x, σ) -> x̂₀ on its noise
    range (EDM's denoiser). Every preconditioned diffusion network and every consistency model is one."""

    sigma_min: float
    sigma_max: float

    def __call__(self, x: Tensor, sigma: Any, class_labels: Labels = None, **cond: Any) -> Tensor: ...

    def round_sigma(self, sigma: Any) -> Any: ...


def is_denoiser(model: Any) -> bool:
    """Whether ``model`` is a :class:`DenoiserLike` (a denoiser or consistency model, not a generator)."""
    return isinstance(model, DenoiserLike)

DISCRETIZATIONS = ("edm", "vp", "ve", "iddpm")
SCHEDULES = ("linear", "vp", "ve")
SCALINGS = ("none", "vp")
#: EDM's default number of sampling steps (18 Heun steps = 35 NFE on CIFAR-10)
NUM_STEPS = 18
#: EDM's reference sampler's noise range
EDM_SIGMA_MIN, EDM_SIGMA_MAX = 0.002, 80.0


# ---------------------------------------------------------------------------------------------------
# Noise schedules σ(t) and time discretisations (EDM Table 1 and Appendix B/C)

class Schedule:
    """σ(t), σ'(t), t(σ) and the scaling s(t), s'(t) of the ODE dx/dt = (σ'/σ + s'/s)x − σ's/σ·D(x/s; σ)."""

    def __init__(self, schedule: str = "linear", scaling: str = "none", beta_d: float = 19.9,
                 beta_min: float = 0.1):
        if schedule not in SCHEDULES:
            raise UserError(f"--schedule: expected one of {', '.join(SCHEDULES)}, got {schedule!r}")
        if scaling not in SCALINGS:
            raise UserError(f"--scaling: expected one of {', '.join(SCALINGS)}, got {scaling!r}")
        self.schedule, self.scaling, self.beta_d, self.beta_min = schedule, scaling, beta_d, beta_min

    @property
    def plain(self) -> bool:
        """σ(t) = t and s(t) = 1: the EDM choice, where the ODE is dx/dσ = (x − D)/σ."""
        return self.schedule == "linear" and self.scaling == "none"

    def sigma(self, t):
        if self.schedule == "vp":
            return vp_sigma(t, self.beta_d, self.beta_min)
        if self.schedule == "ve":
            return t.sqrt()
        return t

    def sigma_deriv(self, t):
        if self.schedule == "vp":
            sigma = self.sigma(t)
            return 0.5 * (self.beta_min + self.beta_d * t) * (sigma + 1 / sigma)
        if self.schedule == "ve":
            return 0.5 / t.sqrt()
        return 1.0

    def sigma_inv(self, sigma):
        if self.schedule == "vp":
            return vp_sigma_inv(sigma, self.beta_d, self.beta_min)
        if self.schedule == "ve":
            return sigma ** 2
        return sigma

    def s(self, t):
        return 1 / (1 + self.sigma(t) ** 2).sqrt() if self.scaling == "vp" else 1.0

    def s_deriv(self, t):
        return -self.sigma(t) * self.sigma_deriv(t) * self.s(t) ** 3 if self.scaling == "vp" else 0.0

    def derivative(self, x: torch.Tensor, denoised: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """dx/dt of the probability-flow ODE (EDM eq. 4 with scaling)."""
        if self.plain:
            return (x - denoised) / t
        sigma, s = self.sigma(t), self.s(t)
        sigma_deriv = self.sigma_deriv(t)
        return (sigma_deriv / sigma + self.s_deriv(t) / s) * x - sigma_deriv * s / sigma * denoised


def default_sigma_range(discretization: str, epsilon_s: float = 1e-3) -> tuple[float, float]:
    """EDM's default (σ_min, σ_max) for each time discretisation."""
    return {"vp": (float(vp_sigma(epsilon_s)), float(vp_sigma(1.0))), "ve": (0.02, 100.0),
            "iddpm": (0.002, 81.0), "edm": (0.002, 80.0)}[discretization]


def vp_betas_for_range(sigma_min: float, sigma_max: float, epsilon_s: float = 1e-3) -> tuple[float, float]:
    """(β_d, β_min) for which the VP schedule spans exactly [σ_min, σ_max] over t ∈ [ε_s, 1]."""
    beta_d = 2 * (np.log(sigma_min ** 2 + 1) / epsilon_s - np.log(sigma_max ** 2 + 1)) / (epsilon_s - 1)
    beta_min = np.log(sigma_max ** 2 + 1) - 0.5 * beta_d
    return float(beta_d), float(beta_min)


def sigma_steps(discretization: str, num_steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0,
                epsilon_s: float = 1e-3, C_1: float = 0.001, C_2: float = 0.008, M: int = 1000,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """Noise levels σ_0 > ... > σ_{N−1} (float64, no trailing zero) of EDM Table 1's time discretisations.

    ``edm``: σ_i = (σ_max^{1/ρ} + i/(N−1)(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ (eq. 5); ``vp``: t uniform in
    [1, ε_s]; ``ve``: σ² geometric; ``iddpm``: evenly spaced indices into the u_j within [σ_min, σ_max].
    """
    if discretization not in DISCRETIZATIONS:
        raise UserError(f"--discretization: expected one of {', '.join(DISCRETIZATIONS)}, "
                        f"got {discretization!r}")
    if num_steps < 1:
        raise UserError(f"--steps: expected a positive number of steps, got {num_steps}")
    i = torch.arange(num_steps, dtype=torch.float64, device=device)
    frac = i / max(num_steps - 1, 1)
    if discretization == "vp":
        beta_d, beta_min = vp_betas_for_range(sigma_min, sigma_max, epsilon_s)
        return vp_sigma(1 + frac * (epsilon_s - 1), beta_d, beta_min)
    if discretization == "ve":
        return ((sigma_max ** 2) * (sigma_min ** 2 / sigma_max ** 2) ** frac).sqrt()
    if discretization == "iddpm":
        u = iddpm_sigmas(M, C_1, C_2).to(device)
        u = u[(u >= sigma_min) & (u <= sigma_max)]
        if len(u) == 0:
            raise UserError(f"no iDDPM noise level lies in [{sigma_min}, {sigma_max}]")
        return u[((len(u) - 1) * frac).round().to(torch.int64)]
    return rho_spaced(sigma_max, sigma_min, frac, rho)


def rho_spaced(sigma_hi: Any, sigma_lo: Any, frac: Any, rho: float = 7.0) -> Any:
    """(σ_hi^{1/ρ} + f·(σ_lo^{1/ρ} − σ_hi^{1/ρ}))^ρ: the point a fraction f of the way from σ_hi to σ_lo
    on EDM's time discretisation (eq. 5); f = i/(N−1) gives the grid."""
    start = sigma_hi ** (1 / rho)
    return (start + frac * (sigma_lo ** (1 / rho) - start)) ** rho


def _clamp_range(net: Any, sigma_min: float, sigma_max: float) -> tuple[float, float]:
    return max(float(sigma_min), float(net.sigma_min)), min(float(sigma_max), float(net.sigma_max))


def noise_levels(net: Any, discretization: str = "edm", num_steps: int = NUM_STEPS,
                 sigma_min: float | None = None,
                 sigma_max: float | None = None, rho: float = 7.0, device: torch.device | str = "cpu",
                 **grid: Any) -> torch.Tensor:
    """The sampling grid for ``net``: clamped to its σ range, snapped by ``net.round_sigma``, 0 appended."""
    lo, hi = default_sigma_range(discretization, grid.get("epsilon_s", 1e-3))
    lo, hi = _clamp_range(net, lo if sigma_min is None else sigma_min, hi if sigma_max is None else sigma_max)
    steps = sigma_steps(discretization, num_steps, lo, hi, rho, device=device, **grid)
    steps = torch.as_tensor(net.round_sigma(steps), dtype=torch.float64)
    return torch.cat([steps, steps.new_zeros(1)])


# ---------------------------------------------------------------------------------------------------
# EDM's deterministic and stochastic samplers

def edm_sampler(net: Any, latents: Tensor, class_labels: Labels = None, num_steps: int = NUM_STEPS,
                sigma_min: float = EDM_SIGMA_MIN, sigma_max: float = EDM_SIGMA_MAX, rho: float = 7,
                S_churn: float = 0,
                S_min: float = 0, S_max: float = float("inf"), S_noise: float = 1,
                randn_like: RandnLike = torch.randn_like) -> torch.Tensor:
    """EDM's stochastic sampler (Algorithm 2; Algorithm 1 when ``S_churn = 0``): ρ-discretisation in float64,
    Euler step plus Heun correction (skipped on the last step); NFE = 2·num_steps − 1."""
    return ablation_sampler(net, latents, class_labels, num_steps=num_steps, sigma_min=sigma_min,
                            sigma_max=sigma_max, rho=rho, solver="heun", discretization="edm",
                            schedule="linear", scaling="none", S_churn=S_churn, S_min=S_min, S_max=S_max,
                            S_noise=S_noise, randn_like=randn_like)


def ablation_sampler(net: Any, latents: Tensor, class_labels: Labels = None, num_steps: int = NUM_STEPS,
                     sigma_min: float | None = None, sigma_max: float | None = None, rho: float = 7,
                     solver: str = "heun", discretization: str = "edm", schedule: str = "linear",
                     scaling: str = "none", epsilon_s: float = 1e-3, C_1: float = 0.001, C_2: float = 0.008,
                     M: int = 1000, alpha: float = 1, S_churn: float = 0, S_min: float = 0,
                     S_max: float = float("inf"), S_noise: float = 1,
                     randn_like: RandnLike = torch.randn_like) -> torch.Tensor:
    """EDM's general sampler (Algorithm 1 generalised as in Sec. 3 and Algorithm 2's churn).

    ``solver`` euler | heun (second evaluation at t + α·h, weights 1 − 1/(2α), 1/(2α)), ``discretization``
    edm | vp | ve | iddpm, ``schedule`` σ(t) linear | vp | ve, ``scaling`` s(t) none | vp. With the
    VP schedule, β_d and β_min are chosen so σ(t) spans [σ_min, σ_max] over t ∈ [ε_s, 1].
    """
    if solver not in ("euler", "heun"):
        raise UserError(f"--solver: expected euler or heun, got {solver!r}")
    lo, hi = default_sigma_range(discretization, epsilon_s)
    lo, hi = _clamp_range(net, lo if sigma_min is None else sigma_min, hi if sigma_max is None else sigma_max)
    beta_d, beta_min = vp_betas_for_range(lo, hi, epsilon_s)
    sched = Schedule(schedule, scaling, beta_d, beta_min)

    sigmas = sigma_steps(discretization, num_steps, lo, hi, rho, epsilon_s, C_1, C_2, M, latents.device)
    t_steps = sched.sigma_inv(torch.as_tensor(net.round_sigma(sigmas), dtype=torch.float64))
    t_steps = torch.cat([t_steps, torch.zeros_like(t_steps[:1])])

    x_next = latents.to(torch.float64) * (sched.sigma(t_steps[0]) * sched.s(t_steps[0]))
    for i, (t_cur, t_next) in enumerate(zip(t_steps[:-1], t_steps[1:])):
        x_cur = x_next
        # Churn: raise the noise level from σ(t) to σ(t̂) = (1 + γ)σ(t) by adding fresh noise (Algorithm 2).
        sigma_cur = sched.sigma(t_cur)
        gamma = min(S_churn / num_steps, math.sqrt(2) - 1) if S_min <= sigma_cur <= S_max else 0
        sigma_hat = torch.as_tensor(net.round_sigma(sigma_cur + gamma * sigma_cur), dtype=torch.float64)
        t_hat = sched.sigma_inv(sigma_hat)
        x_hat = (sched.s(t_hat) / sched.s(t_cur) * x_cur
                 + (sched.sigma(t_hat) ** 2 - sigma_cur ** 2).clip(min=0).sqrt() * sched.s(t_hat) * S_noise
                 * randn_like(x_cur))

        h = t_next - t_hat
        denoised = net(x_hat / sched.s(t_hat), sched.sigma(t_hat), class_labels).to(torch.float64)
        d_cur = sched.derivative(x_hat, denoised, t_hat)
        if solver == "euler" or i == num_steps - 1:
            x_next = x_hat + h * d_cur
        else:
            t_prime = t_hat + alpha * h
            x_prime = x_hat + alpha * h * d_cur
            denoised = net(x_prime / sched.s(t_prime), sched.sigma(t_prime), class_labels).to(torch.float64)
            d_prime = sched.derivative(x_prime, denoised, t_prime)
            x_next = x_hat + h * ((1 - 1 / (2 * alpha)) * d_cur + 1 / (2 * alpha) * d_prime)
    return x_next


def euler_sampler(net: Any, latents: Tensor, class_labels: Labels = None, **kw: Any) -> Tensor:
    """Euler's method on the probability-flow ODE (first order; NFE = num_steps)."""
    return ablation_sampler(net, latents, class_labels, solver="euler", **kw)


def heun_sampler(net: Any, latents: Tensor, class_labels: Labels = None, **kw: Any) -> Tensor:
    """Heun's method on the probability-flow ODE (second order; NFE = 2·num_steps − 1)."""
    return ablation_sampler(net, latents, class_labels, solver="heun", **kw)


# ---------------------------------------------------------------------------------------------------
# Samplers from the DDPM/DDIM and DPM-Solver lines, written in σ (x = x0 + σ·n)

def ancestral_step(sigma: Tensor, sigma_next: Tensor, eta: float) -> tuple[Tensor, Tensor]:
    """(σ_down, σ_up): DDIM's stochasticity η (Song et al. 2021, eq. 16) in σ form.

    σ_up = η·σ'·√(σ² − σ'²)/σ (capped at σ'), σ_down = √(σ'² − σ_up²); η = 1 is DDPM's posterior variance β̃.
    """
    if eta == 0 or float(sigma_next) == 0:
        return sigma_next, torch.zeros_like(sigma_next)
    up = eta * sigma_next * (sigma ** 2 - sigma_next ** 2).clip(min=0).sqrt() / sigma
    up = torch.minimum(sigma_next, up)
    return (sigma_next ** 2 - up ** 2).sqrt(), up


def ddim_step(x: Tensor, denoised: Tensor, sigma: Any, sigma_next: Any) -> Tensor:
    """The deterministic DDIM update in σ form, x' = D + (σ'/σ)(x − D) (Song et al. 2021, eq. 12 with
    x = x₀ + σ·n); = one Euler step of dx/dσ = (x − D)/σ."""
    return denoised + (sigma_next / sigma) * (x - denoised)


def pf_ode_step(denoise: Callable[[Tensor, Tensor], Tensor], x: Tensor, sigma: Tensor, sigma_next: Tensor,
                solver: str = "heun") -> Tensor:
    """One step of the probability-flow ODE dx/dσ = (x − D(x; σ))/σ (EDM eq. 3) from per-sample σ to σ_next
    (both > 0): Euler, plus Heun's trapezoidal correction (EDM Algorithm 1, lines 5-8). ``denoise(x, σ)``
    returns D in ``x``'s dtype; σ are per-sample tensors ([N])."""
    sigma4 = sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
    next4 = sigma_next.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
    d_cur = (x - denoise(x, sigma)) / sigma4
    x_euler = x + (next4 - sigma4) * d_cur
    if solver == "euler":
        return x_euler
    d_next = (x_euler - denoise(x_euler, sigma_next)) / next4
    return x + (next4 - sigma4) * 0.5 * (d_cur + d_next)


def ddim_sampler(net: Any, latents: Tensor, class_labels: Labels = None, num_steps: int = NUM_STEPS,
                 eta: float = 0.0, discretization: str = "edm", sigma_min: float | None = None,
                 sigma_max: float | None = None, rho: float = 7, randn_like: RandnLike = torch.randn_like,
                 **grid: Any) -> torch.Tensor:
    """DDIM (Song et al. 2021) with stochasticity η: x' = D + (σ_down/σ)(x − D) + σ_up·z; NFE = num_steps.

    η = 0 is the deterministic DDIM (= Euler in σ); η = 1 is DDPM ancestral sampling.
    """
    sigmas = noise_levels(net, discretization, num_steps, sigma_min, sigma_max, rho, latents.device, **grid)
    x = latents.to(torch.float64) * sigmas[0]
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        denoised = net(x, sigma, class_labels).to(torch.float64)
        down, up = ancestral_step(sigma, sigma_next, eta)
        x = ddim_step(x, denoised, sigma, down)
        if up > 0:
            x = x + up * randn_like(x)
    return x


def ddpm_sampler(net: Any, latents: Tensor, class_labels: Labels = None, **kw: Any) -> Tensor:
    """DDPM ancestral sampling (Ho et al. 2020, posterior variance β̃): DDIM with η = 1."""
    kw.pop("eta", None)
    return ddim_sampler(net, latents, class_labels, eta=1.0, **kw)


def dpmpp_2m_sampler(net: Any, latents: Tensor, class_labels: Labels = None, num_steps: int = NUM_STEPS,
                     discretization: str = "edm", sigma_min: float | None = None,
                     sigma_max: float | None = None,
                     rho: float = 7, randn_like: RandnLike = torch.randn_like, **grid: Any) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2) in λ = −ln σ; multistep, NFE = num_steps.

    The first step and the final step to σ = 0 are first order.
    """
    sigmas = noise_levels(net, discretization, num_steps, sigma_min, sigma_max, rho, latents.device, **grid)
    x = latents.to(torch.float64) * sigmas[0]
    old_denoised, h_last = None, None
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        denoised = net(x, sigma, class_labels).to(torch.float64)
        if sigma_next == 0:
            x = denoised
            break
        h = sigma.log() - sigma_next.log()
        d = denoised
        if old_denoised is not None:
            r = h_last / h
            d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        x = (sigma_next / sigma) * x - torch.expm1(-h) * d
        old_denoised, h_last = denoised, h
    return x
