"""Discrete-time Gaussian diffusion as in DDPM, iDDPM and ADM (Ho et al. 2020; Nichol & Dhariwal 2021;
Dhariwal & Nichol 2021).

The forward process q(x_t | x_0) = N(√ᾱ_t x_0, (1−ᾱ_t) I) over T steps with a linear or cosine β
schedule; an ε-predicting network with fixed or learned (interpolated log-) variances; the hybrid loss
L_simple + λ·L_vlb; timestep respacing with the public syntax (``"250"``, ``"ddim25"``, ``"10,10,10"``);
ancestral and DDIM sampling, each with classifier guidance. The schedule coefficients are computed in
float64 and applied in float32, as in the public code.

:class:`DiscreteDenoiser` runs the same network as an EDM denoiser (the iDDPM preconditioning on the
model's own σ grid), so every sampler of :mod:`genzoo.diffusion.samplers` applies to it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from genzoo.diffusion.guidance import ClassifierGuidance, _Wrapper
from genzoo.diffusion.precond import IDDPMDenoiser
from genzoo.errors import UserError
from genzoo.io.images import from_uint8
from genzoo.seeds import integers, normal_like, uniform

VARIANCES = ("learned_range", "fixed_large", "fixed_small")
LOSS_TYPES = ("hybrid", "mse", "kl")
# (x_t, model timesteps, class labels) -> ∇_{x_t} of the guidance log-probability, already scaled
CondFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


# ----------------------------------------------------------------------------- schedules and respacing


def beta_schedule(name: str, num_steps: int) -> np.ndarray:
    """β_1..β_T in float64: ``linear`` from (1000/T)·1e-4 to (1000/T)·0.02 (DDPM, scaled to T), or
    ``cosine`` with ᾱ(t) = cos²(((t/T)+0.008)/1.008 · π/2) and β capped at 0.999 (iDDPM eq. 17)."""
    if num_steps < 1:
        raise UserError(f"--diffusion-steps: expected a positive number of steps, got {num_steps}")
    if name == "linear":
        scale = 1000.0 / num_steps
        return np.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=np.float64)
    if name == "cosine":

        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        return np.array(
            [
                min(1 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), 0.999)
                for i in range(num_steps)
            ],
            dtype=np.float64,
        )
    raise UserError(f"--noise-schedule: expected linear or cosine, got {name!r}")


def space_timesteps(num_steps: int, spacing: str | Sequence[int]) -> list[int]:
    """The original timesteps kept by a respacing, sorted (iDDPM §4, the public ``timestep_respacing``).

    ``"ddimN"``: the DDIM stride, ``range(0, T, s)`` for the stride s giving exactly N steps.
    ``"a,b,c"`` (or a list): T is cut into equal sections (the first T mod k one longer) and section i
    keeps ``a_i`` steps evenly spaced from its start to its end, rounded. ``"N"`` is one section.
    """
    text = spacing if isinstance(spacing, str) else ",".join(map(str, spacing))
    text = text.strip()
    if not text:
        return list(range(num_steps))
    if text.startswith("ddim"):
        try:
            desired = int(text[4:])
        except ValueError:
            raise UserError(f"--respacing: expected ddimN, got {text!r}") from None
        for stride in range(1, num_steps):
            if len(range(0, num_steps, stride)) == desired:
                return list(range(0, num_steps, stride))
        raise UserError(f"--respacing: no integer stride gives {desired} of {num_steps} steps")
    try:
        counts = [int(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"--respacing: expected '250', 'ddim25' or '10,10,10', got {text!r}") from None
    size_per, extra = divmod(num_steps, len(counts))
    start, kept = 0, []
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if count < 1 or count > size:
            raise UserError(f"--respacing: cannot take {count} steps from a section of {size} in {text!r}")
        stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
        position = 0.0
        for _ in range(count):
            kept.append(start + round(position))
            position += stride  # accumulated, as the public code does, so rounding ties fall the same way
        start += size
    return sorted(set(kept))


def respaced_betas(betas: np.ndarray, kept: Sequence[int]) -> np.ndarray:
    """β of the respaced process: 1 − ᾱ_{k_i}/ᾱ_{k_{i−1}} over the kept steps, so ᾱ is unchanged on them."""
    alphas_cumprod = np.cumprod(1.0 - betas)
    new, last = [], 1.0
    for k in kept:
        new.append(1.0 - alphas_cumprod[k] / last)
        last = alphas_cumprod[k]
    return np.array(new, dtype=np.float64)


# ----------------------------------------------------------------------------- likelihood terms


def normal_kl(
    mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor
) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) per element, in nats."""
    return 0.5 * (
        -1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """Φ(x) by the tanh approximation 0.5·(1 + tanh(√(2/π)·(x + 0.044715 x³))) the public code uses."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor
) -> torch.Tensor:
    """log p(x) of 8-bit data in [−1, 1] under a Gaussian integrated over each bin of width 2/255
    (DDPM §3.3), the edge bins extended to ±∞."""
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def _mean_flat(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=tuple(range(1, x.ndim)))


# ----------------------------------------------------------------------------- the process


class DiscreteDiffusion:
    """A discrete Gaussian diffusion with an ε-predicting (or x₀-predicting) network.

    ``betas`` are the (possibly respaced) β; ``timestep_map[i]`` is the original step of step i and
    ``original_num_steps`` the original T. The network is called as ``net(x_t, model_timesteps(t), y)``,
    where the timesteps are the original ones, times 1000/T with ``rescale_timesteps`` (improved-diffusion).
    """

    def __init__(
        self,
        betas: np.ndarray,
        variance: str = "learned_range",
        predict: str = "eps",
        loss: str = "hybrid",
        rescale_timesteps: bool = False,
        rescale_learned_sigmas: bool = False,
        timestep_map: Sequence[int] | None = None,
        original_num_steps: int | None = None,
    ):
        if variance not in VARIANCES:
            raise UserError(f"variance: expected one of {', '.join(VARIANCES)}, got {variance!r}")
        if loss not in LOSS_TYPES:
            raise UserError(f"loss: expected one of {', '.join(LOSS_TYPES)}, got {loss!r}")
        if predict not in ("eps", "x0"):
            raise UserError(f"predict: expected eps or x0, got {predict!r}")
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or not ((betas > 0) & (betas <= 1)).all():
            raise ValueError("betas must be a 1-D array in (0, 1]")
        self.variance, self.predict, self.loss_type = variance, predict, loss
        self.rescale_timesteps, self.rescale_learned_sigmas = (
            bool(rescale_timesteps),
            bool(rescale_learned_sigmas),
        )
        self.num_timesteps = len(betas)
        self.timestep_map = list(timestep_map) if timestep_map is not None else list(range(len(betas)))
        self.original_num_steps = int(original_num_steps or len(betas))

        alphas = 1.0 - betas
        ac = np.cumprod(alphas)
        ac_prev = np.append(1.0, ac[:-1])
        post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
        arrays = {
            "betas": betas,
            "alphas_cumprod": ac,
            "alphas_cumprod_prev": ac_prev,
            "sqrt_alphas_cumprod": np.sqrt(ac),
            "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - ac),
            "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ac),
            "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ac - 1.0),
            "posterior_variance": post_var,
            # the t = 0 posterior variance is 0: its log is clipped to that of t = 1
            "posterior_log_variance_clipped": np.log(np.append(post_var[1], post_var[1:]))
            if len(betas) > 1
            else np.log(betas),
            "posterior_mean_coef1": betas * np.sqrt(ac_prev) / (1.0 - ac),
            "posterior_mean_coef2": (1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac),
            "log_betas": np.log(betas),
            "fixed_large_variance": np.append(post_var[1], betas[1:]) if len(betas) > 1 else betas,
        }
        self.arrays = {k: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in arrays.items()}

    @classmethod
    def create(
        cls,
        steps: int = 1000,
        noise_schedule: str = "linear",
        respacing: str | Sequence[int] = "",
        learn_sigma: bool = True,
        sigma_small: bool = False,
        **kwargs: Any,
    ) -> DiscreteDiffusion:
        """The process as the public ``create_gaussian_diffusion`` makes it from its flags."""
        betas = beta_schedule(noise_schedule, steps)
        kept = space_timesteps(steps, respacing)
        variance = "learned_range" if learn_sigma else ("fixed_small" if sigma_small else "fixed_large")
        return cls(
            respaced_betas(betas, kept),
            variance=variance,
            timestep_map=kept,
            original_num_steps=steps,
            **kwargs,
        )

    def respace(self, respacing: str | Sequence[int]) -> DiscreteDiffusion:
        """The same model on a subset of its steps (only from an unrespaced process)."""
        if self.num_timesteps != self.original_num_steps:
            raise ValueError("respace an unrespaced process")
        kept = space_timesteps(self.num_timesteps, respacing)
        return DiscreteDiffusion(
            respaced_betas(self.arrays["betas"].numpy(), kept),
            variance=self.variance,
            predict=self.predict,
            loss=self.loss_type,
            rescale_timesteps=self.rescale_timesteps,
            rescale_learned_sigmas=self.rescale_learned_sigmas,
            timestep_map=kept,
            original_num_steps=self.original_num_steps,
        )

    # ------------------------------------------------------------------ helpers

    def _extract(self, name: str, t: torch.Tensor, ndim: int) -> torch.Tensor:
        values = self.arrays[name].to(t.device)[t.long()].float()
        return values.reshape(-1, *([1] * (ndim - 1)))

    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """What the network receives for step indices ``t``: the original timestep, ×1000/T when rescaled."""
        mapped = torch.tensor(self.timestep_map, device=t.device, dtype=torch.long)[t.long()]
        if self.rescale_timesteps:
            return mapped.float() * (1000.0 / self.original_num_steps)
        return mapped

    def sigmas(self) -> torch.Tensor:
        """σ_t = √((1−ᾱ_t)/ᾱ_t) of every step (float64), the noise level in EDM's x = x₀ + σ·n form."""
        ac = self.arrays["alphas_cumprod"]
        return ((1 - ac) / ac).sqrt()

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε (DDPM eq. 4)."""
        return (
            self._extract("sqrt_alphas_cumprod", t, x0.ndim) * x0
            + self._extract("sqrt_one_minus_alphas_cumprod", t, x0.ndim) * noise
        )

    def q_posterior(
        self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and clipped log-variance of q(x_{t−1} | x_t, x₀) (DDPM eqs. 6–7)."""
        mean = (
            self._extract("posterior_mean_coef1", t, x_t.ndim) * x0
            + self._extract("posterior_mean_coef2", t, x_t.ndim) * x_t
        )
        return mean, self._extract("posterior_log_variance_clipped", t, x_t.ndim)

    def x0_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return (
            self._extract("sqrt_recip_alphas_cumprod", t, x_t.ndim) * x_t
            - self._extract("sqrt_recipm1_alphas_cumprod", t, x_t.ndim) * eps
        )

    def eps_from_x0(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return (self._extract("sqrt_recip_alphas_cumprod", t, x_t.ndim) * x_t - x0) / self._extract(
            "sqrt_recipm1_alphas_cumprod", t, x_t.ndim
        )

    def model_log_variance(self, t: torch.Tensor, v: torch.Tensor | None, ndim: int) -> torch.Tensor:
        """log Σ_θ: learned log Σ = v'·log β_t + (1−v')·log β̃_t with v' = (v+1)/2 (iDDPM eq. 15), or fixed."""
        if self.variance == "learned_range":
            frac = (v + 1) / 2
            return frac * self._extract("log_betas", t, ndim) + (1 - frac) * self._extract(
                "posterior_log_variance_clipped", t, ndim
            )
        if self.variance == "fixed_large":
            return torch.log(self._extract("fixed_large_variance", t, ndim))
        return self._extract("posterior_log_variance_clipped", t, ndim)

    def p_mean_variance(
        self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, clip_denoised: bool = True
    ) -> dict[str, torch.Tensor]:
        """Mean, variance, log-variance and x̂₀ of p_θ(x_{t−1} | x_t) from the network's raw output."""
        channels = x_t.shape[1]
        v = None
        if self.variance == "learned_range":
            if output.shape[1] != 2 * channels:
                raise ValueError(
                    f"a learned-variance model outputs {2 * channels} channels, got {output.shape[1]}"
                )
            output, v = output[:, :channels], output[:, channels:]
        else:
            output = output[:, :channels]
        log_variance = self.model_log_variance(t, v, x_t.ndim)
        x0 = output if self.predict == "x0" else self.x0_from_eps(x_t, t, output)
        if clip_denoised:
            x0 = x0.clamp(-1, 1)
        mean, _ = self.q_posterior(x0, x_t, t)
        return {
            "mean": mean,
            "variance": torch.exp(log_variance),
            "log_variance": log_variance,
            "pred_xstart": x0,
        }

    def _call(
        self,
        net: Callable[..., torch.Tensor],
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor | None,
        cond: dict[str, Any],
    ) -> torch.Tensor:
        return net(x, self.model_timesteps(t), y, **cond).float()

    # ------------------------------------------------------------------ training

    def vb_terms_bpd(
        self, output: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """L_t in bits per dimension: KL(q(x_{t−1}|x_t,x₀) ‖ p_θ(x_{t−1}|x_t)) for t > 0, and the
        discretised decoder NLL −log p_θ(x₀|x₁) for t = 0 (DDPM eq. 5)."""
        true_mean, true_log_var = self.q_posterior(x0, x_t, t)
        out = self.p_mean_variance(output, x_t, t, clip_denoised=False)
        kl = _mean_flat(normal_kl(true_mean, true_log_var, out["mean"], out["log_variance"])) / math.log(2.0)
        nll = -_mean_flat(discretized_gaussian_log_likelihood(x0, out["mean"], 0.5 * out["log_variance"]))
        return torch.where(t == 0, nll / math.log(2.0), kl)

    def training_losses(
        self,
        net: Callable[..., torch.Tensor],
        x0: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
        **cond: Any,
    ) -> dict[str, torch.Tensor]:
        """Per-example losses at steps ``t``: ``loss``, and ``mse`` / ``vb`` when they apply.

        ``hybrid``: L_simple = ‖ε − ε_θ‖² plus λ·L_vlb with the mean frozen, so L_vlb trains only the
        variance (iDDPM §3.1); λ = T/1000 per step with ``rescale_learned_sigmas`` (the paper's λ = 0.001
        on the sum over steps), else 1. ``kl``: T·L_t, the whole variational bound.
        """
        noise = torch.randn_like(x0) if noise is None else noise
        x_t = self.q_sample(x0, t, noise)
        output = self._call(net, x_t, t, y, cond)
        terms: dict[str, torch.Tensor] = {}
        if self.loss_type == "kl":
            terms["vb"] = self.vb_terms_bpd(output, x0, x_t, t) * self.num_timesteps
            terms["loss"] = terms["vb"]
            return terms
        channels = x0.shape[1]
        prediction = output[:, :channels]
        if self.variance == "learned_range":
            frozen = torch.cat([prediction.detach(), output[:, channels:]], dim=1)
            weight = self.num_timesteps / 1000.0 if self.rescale_learned_sigmas else 1.0
            terms["vb"] = self.vb_terms_bpd(frozen, x0, x_t, t) * weight
        target = x0 if self.predict == "x0" else noise
        terms["mse"] = _mean_flat((target - prediction) ** 2)
        terms["loss"] = terms["mse"] + terms["vb"] if "vb" in terms else terms["mse"]
        return terms

    # ------------------------------------------------------------------ sampling

    def ancestral_step(
        self,
        net: Callable[..., torch.Tensor],
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor | None,
        noise: torch.Tensor,
        clip_denoised: bool = True,
        cond_fn: CondFn | None = None,
        cond: dict[str, Any] | None = None,
    ) -> dict[str, torch.Tensor]:
        """x_{t−1} ~ p_θ(x_{t−1} | x_t); classifier guidance shifts the mean by Σ·∇log p(y|x_t)
        (ADM Algorithm 1, where ``cond_fn`` includes the scale)."""
        out = self.p_mean_variance(self._call(net, x, t, y, cond or {}), x, t, clip_denoised)
        mean = out["mean"]
        if cond_fn is not None:
            mean = mean + out["variance"] * cond_fn(x, self.model_timesteps(t), y).float()
        nonzero = (t != 0).float().reshape(-1, *([1] * (x.ndim - 1)))
        out["sample"] = mean + nonzero * torch.exp(0.5 * out["log_variance"]) * noise
        return out

    def ddim_step(
        self,
        net: Callable[..., torch.Tensor],
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor | None,
        noise: torch.Tensor,
        eta: float = 0.0,
        clip_denoised: bool = True,
        cond_fn: CondFn | None = None,
        cond: dict[str, Any] | None = None,
    ) -> dict[str, torch.Tensor]:
        """One DDIM step (Song et al. 2021, eq. 12) with σ = η·√((1−ᾱ_prev)/(1−ᾱ))·√(1−ᾱ/ᾱ_prev);
        classifier guidance replaces ε by ε − √(1−ᾱ_t)·∇log p(y|x_t) (ADM Algorithm 2)."""
        out = self.p_mean_variance(self._call(net, x, t, y, cond or {}), x, t, clip_denoised)
        x0 = out["pred_xstart"]
        eps = self.eps_from_x0(x, t, x0)
        if cond_fn is not None:
            eps = (
                eps
                - (1 - self._extract("alphas_cumprod", t, x.ndim)).sqrt()
                * cond_fn(x, self.model_timesteps(t), y).float()
            )
            x0 = self.x0_from_eps(x, t, eps)
        ab = self._extract("alphas_cumprod", t, x.ndim)
        ab_prev = self._extract("alphas_cumprod_prev", t, x.ndim)
        sigma = eta * ((1 - ab_prev) / (1 - ab)).sqrt() * (1 - ab / ab_prev).sqrt()
        mean = x0 * ab_prev.sqrt() + (1 - ab_prev - sigma**2).sqrt() * eps
        nonzero = (t != 0).float().reshape(-1, *([1] * (x.ndim - 1)))
        return {"sample": mean + nonzero * sigma * noise, "pred_xstart": x0}

    @torch.no_grad()
    def sample(
        self,
        net: Callable[..., torch.Tensor],
        noise: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        ddim: bool = False,
        eta: float = 0.0,
        clip_denoised: bool = True,
        cond_fn: CondFn | None = None,
        randn_like: Callable[[torch.Tensor], torch.Tensor] = torch.randn_like,
        **cond: Any,
    ) -> tuple[torch.Tensor, int]:
        """Run the reverse process from x_T = ``noise`` over every (respaced) step: (x₀, network evaluations).

        Fresh noise is drawn with ``randn_like`` at every step (also the last, whose noise is unused),
        so per-seed generators give batch-independent samples."""
        x = noise.float()
        for i in reversed(range(self.num_timesteps)):
            t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
            step_noise = randn_like(x)
            if ddim:
                x = self.ddim_step(net, x, t, y, step_noise, eta, clip_denoised, cond_fn, cond)["sample"]
            else:
                x = self.ancestral_step(net, x, t, y, step_noise, clip_denoised, cond_fn, cond)["sample"]
        return x, self.num_timesteps


# ----------------------------------------------------------------------------- EDM bridges


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


class HybridLoss:
    """The diffusion family's ``--loss hybrid``: iDDPM's L_simple + λ·L_vlb (or L_vlb alone for a process
    with ``loss: kl``) at t uniform over the steps, per example; needs a :class:`DiscreteDenoiser`."""

    def __call__(
        self,
        net: Any,
        images: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        augment_pipe: Any = None,
        rng: Any = None,
    ) -> torch.Tensor:
        if not isinstance(net, DiscreteDenoiser):
            raise UserError("--loss hybrid: needs a discrete model (--arch adm with --precond iddpm)")
        if augment_pipe is not None:
            raise UserError(
                "--augment: the ADM UNet has no augmentation input; use --augment 0 with --loss hybrid"
            )
        n, T = images.shape[0], net.diffusion.num_timesteps
        t, noise = integers(rng, 0, T, n, images.device), normal_like(rng, images)
        return net.diffusion.training_losses(net.model, images, t, noise, class_labels)["loss"]


class LossSecondMomentSampler:
    """Importance sampling of the step for L_vlb (iDDPM §3.3): p_t ∝ √E[L_t²] over each step's last
    ``history`` losses, mixed with ``uniform_prob`` of the uniform distribution; uniform until every step
    has its history. Losses are weighted by 1/(T·p_t), so the estimate of the mean over steps is unbiased."""

    def __init__(self, num_steps: int, history: int = 10, uniform_prob: float = 0.001):
        self.num_steps, self.history_size, self.uniform_prob = (
            int(num_steps),
            int(history),
            float(uniform_prob),
        )
        self.history = np.zeros((self.num_steps, self.history_size), dtype=np.float64)
        self.counts = np.zeros(self.num_steps, dtype=np.int64)

    def probabilities(self) -> np.ndarray:
        if (self.counts < self.history_size).any():
            return np.full(self.num_steps, 1.0 / self.num_steps)
        weights = np.sqrt((self.history**2).mean(axis=1))
        weights = weights / weights.sum() * (1 - self.uniform_prob)
        return weights + self.uniform_prob / self.num_steps

    def sample(self, n: int, device: torch.device, rng: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(steps [n], loss weights 1/(T·p_t) [n]); the uniform draws come from rng, per seed, when given."""
        p = self.probabilities()
        u = uniform(rng, [n], "cpu").double().numpy()
        t = np.minimum(np.searchsorted(np.cumsum(p), u, side="right"), self.num_steps - 1)
        weights = 1.0 / (self.num_steps * p[t])
        return torch.from_numpy(t).to(device), torch.from_numpy(weights).to(device, torch.float32)

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Record this batch's per-example losses (the oldest entry of a full history is dropped)."""
        for step, loss in zip(t.tolist(), losses.detach().double().cpu().tolist(), strict=True):
            if self.counts[step] == self.history_size:
                self.history[step, :-1] = self.history[step, 1:]
                self.history[step, -1] = loss
            else:
                self.history[step, self.counts[step]] = loss
                self.counts[step] += 1


class VLBLoss:
    """The diffusion family's ``--loss vlb``: iDDPM's L_vlb alone (T·L_t per example, learned variances)
    with the loss-second-moment step sampler. The sampler's history is per process and not checkpointed."""

    def __init__(self) -> None:
        self.sampler: LossSecondMomentSampler | None = None

    def __call__(
        self,
        net: Any,
        images: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        augment_pipe: Any = None,
        rng: Any = None,
    ) -> torch.Tensor:
        if not isinstance(net, DiscreteDenoiser) or net.diffusion.loss_type != "kl":
            raise UserError("--loss vlb: needs --arch adm with --precond iddpm")
        if augment_pipe is not None:
            raise UserError(
                "--augment: the ADM UNet has no augmentation input; use --augment 0 with --loss vlb"
            )
        if self.sampler is None or self.sampler.num_steps != net.diffusion.num_timesteps:
            self.sampler = LossSecondMomentSampler(net.diffusion.num_timesteps)
        t, weights = self.sampler.sample(images.shape[0], images.device, rng)
        noise = normal_like(rng, images)
        losses = net.diffusion.training_losses(net.model, images, t, noise, class_labels)["loss"]
        self.sampler.update(t, losses)
        return losses * weights


_CLASSIFIERS: dict[tuple[str, str], nn.Module] = {}


def load_classifier(path: Any, device: torch.device) -> nn.Module:
    """A noise-aware classifier (trained with ``--family classifier`` or converted with ``genzoo
    convert``): the model itself when the API has loaded it, else loaded from its directory, cached per
    path and device across batches."""
    if isinstance(path, nn.Module):
        return path
    key = (str(path), str(device))
    if key not in _CLASSIFIERS:
        from genzoo.family import load_model

        model = load_model(path, device=device)
        if getattr(model, "config", {}).get("family") != "classifier":
            raise UserError(
                f"--classifier {path}: not a classifier model (family {model.config.get('family')!r})"
            )
        _CLASSIFIERS[key] = model
    return _CLASSIFIERS[key]


def seed_labels(seeds: Sequence[int], num_classes: int, device: torch.device) -> torch.Tensor:
    """One class per seed, drawn from the seed alone (the labels ``genzoo.api.sample`` draws): the classes an
    unconditional model is guided toward, as the public classifier_sample.py draws random classes."""
    from genzoo.seeds import labels_for_seeds

    return torch.tensor(labels_for_seeds(list(seeds), None, int(num_classes)), device=device,
                        dtype=torch.long)


def classifier_scale(options: dict[str, Any], model: Any) -> float:
    """``--classifier-scale``, else the converted checkpoint's README value (``classifier_scale``), else 1."""
    if options.get("classifier_scale") is not None:
        return float(options["classifier_scale"])
    return float((getattr(model, "config", None) or {}).get("classifier_scale", 1.0))


def with_classifier_guidance(net: Any, denoiser: Any, options: dict[str, Any], rng: Any) -> Any:
    """``net`` with ADM classifier guidance (``--classifier PATH --classifier-scale s``) for EDM samplers:
    :class:`~genzoo.diffusion.guidance.ClassifierGuidance` over the classifier in σ form. An unconditional
    model is guided toward a class drawn per seed (it never sees the label)."""
    path = options.get("classifier")
    if not path or str(options.get("sampler") or "").startswith("adm-"):  # the ADM samplers guide themselves
        return net
    device = getattr(rng, "device", rng)  # a StackedRandomGenerator (or, from older callers, a device)
    classifier = load_classifier(path, device)
    if isinstance(denoiser, DiscreteDenoiser):
        diffusion = denoiser.diffusion
    else:
        diffusion = discrete_from_config(classifier.config.get("discrete") or {})
    scale = classifier_scale(options, denoiser)
    sigma_classifier = DiscreteClassifier(classifier, diffusion)
    if int(getattr(denoiser, "label_dim", 0) or 0):
        return ClassifierGuidance(net, sigma_classifier, scale)
    if getattr(rng, "seeds", None) is None:
        raise UserError("--classifier: guiding an unconditional model needs the batch's seeds")
    labels = seed_labels(rng.seeds, classifier.num_classes, device)
    return _GuideToward(net, sigma_classifier, scale, labels)


class _LabelFree(_Wrapper):
    """A denoiser that ignores class labels (an unconditional model under classifier guidance)."""

    def forward(self, x: torch.Tensor, sigma: Any, class_labels: Any = None, **cond: Any) -> torch.Tensor:
        return self.denoiser(x, sigma, None, **cond)


class _GuideToward(ClassifierGuidance):
    """Classifier guidance toward fixed labels; the guided denoiser sees none."""

    def __init__(self, denoiser: Any, classifier: Any, scale: float, labels: torch.Tensor):
        super().__init__(_LabelFree(denoiser), classifier, scale)
        self.labels = labels

    def forward(self, x: torch.Tensor, sigma: Any, class_labels: Any = None, **cond: Any) -> torch.Tensor:
        return super().forward(x, sigma, self.labels, **cond)


def _respacing(denoiser: DiscreteDenoiser, options: dict[str, Any], ddim: bool) -> str:
    if options.get("respacing"):
        return str(options["respacing"])
    if options.get("steps"):
        return f"ddim{int(options['steps'])}" if ddim else str(int(options["steps"]))
    default = getattr(denoiser, "default_respacing", "")
    if default and default.startswith("ddim") == ddim:
        return default
    return "ddim25" if ddim else "250"


def _seeds(randn_like: Any, flag: str) -> list[int]:
    """The seeds of the batch, from the per-seed generator whose ``randn_like`` the sampler got."""
    seeds = getattr(getattr(randn_like, "__self__", None), "seeds", None)
    if seeds is None:
        raise UserError(f"{flag}: needs per-seed generators (genzoo.api.sample) to pair seeds with images")
    return list(seeds)


def low_res_batch(
    options: dict[str, Any], randn_like: Any, net: nn.Module, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The ``--low-res`` base samples (an ADM .npz: arr_0 uint8 NHWC, arr_1 labels) of this batch's seeds:
    seed s upsamples image s (as the public super_res_sample.py pairs them, in order), in [−1, 1]."""
    from genzoo.io import read_npz_images

    path = options.get("low_res")
    if not path:
        raise UserError("--low-res: a super-resolution model needs the .npz of base samples to upsample")
    seeds = _seeds(randn_like, "--low-res")
    images, labels = read_npz_images(path)
    if max(seeds) >= len(images):
        raise UserError(
            f"--low-res {path}: {len(images)} images, but seed {max(seeds)} asks for image {max(seeds)}"
        )
    size = int(net.small_size)
    if images.shape[1:3] != (size, size):
        raise UserError(
            f"--low-res {path}: expected {size}x{size} images, got {images.shape[1]}x{images.shape[2]}"
        )
    batch = from_uint8(torch.from_numpy(images[seeds]).to(device).permute(0, 3, 1, 2))
    return batch, (torch.from_numpy(labels[seeds]).to(device).long() if labels is not None else None)


def _adm_sampler(ddim: bool) -> Callable[..., torch.Tensor]:
    def run(
        counter: Any,
        latents: torch.Tensor,
        class_labels: torch.Tensor | None,
        randn_like: Any,
        options: dict[str, Any],
    ) -> torch.Tensor:
        denoiser = getattr(counter, "net", counter)
        if not isinstance(denoiser, DiscreteDenoiser):
            raise UserError(
                f"--sampler adm-{'ddim' if ddim else 'ddpm'}: needs a discrete (ADM/iDDPM) model without "
                "--guidance; use the EDM samplers for other models"
            )
        diffusion = denoiser.diffusion.respace(_respacing(denoiser, options, ddim))
        cond: dict[str, torch.Tensor] = {}
        if getattr(denoiser.model, "small_size", None):  # a super-resolution model: --low-res base samples
            cond["low_res"], labels = low_res_batch(options, randn_like, denoiser.model, latents.device)
            if labels is not None and denoiser.label_dim:
                class_labels = labels
        cond_fn = None
        if options.get("classifier"):
            classifier = load_classifier(options["classifier"], latents.device)
            toward = None
            if class_labels is None:  # an unconditional model: guide toward a class drawn per seed
                toward = seed_labels(
                    _seeds(randn_like, "--classifier"), classifier.num_classes, latents.device
                )
            cond_fn = classifier_cond_fn(classifier, classifier_scale(options, denoiser), toward)
        x, nfe = diffusion.sample(
            denoiser.model,
            latents,
            class_labels,
            ddim=ddim,
            eta=float(options.get("eta") or 0.0),
            clip_denoised=not options.get("no_clip"),
            cond_fn=cond_fn,
            randn_like=randn_like,
            **cond,
        )
        if hasattr(counter, "nfe"):
            counter.nfe += nfe
        return x

    return run


def adm_network_kwargs(config: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """``--arch adm`` for ``genzoo train --family diffusion``: ADM UNet kwargs from the shared network flags
    (``--model-channels``, ``--channel-mult``, ``--num-blocks``, ``--attn-res``, ``--dropout``). With
    ``--precond iddpm`` the discrete process (``--diffusion-steps``, ``--noise-schedule``) is written to
    ``config["discrete"]``; ``--loss hybrid`` makes the network learn its variances."""
    if base.get("augment_dim"):
        raise UserError("--augment: the ADM UNet has no augmentation input; train it with --augment 0")
    res, label_dim = int(base["resolution"]), int(base.get("label_dim") or 0)
    learn_sigma = config.get("loss") in ("hybrid", "vlb")
    kwargs = dict(
        image_size=res,
        in_channels=int(base.get("in_channels", 3)),
        num_channels=int(config.get("model_channels") or 64),
        num_res_blocks=int(config.get("num_blocks") or 2),
        channel_mult=str(config.get("channel_mult") or ("1,2" if res <= 8 else "1,2,2" if res <= 32 else "")),
        attention_resolutions=str(config.get("attn_res") or max(res // 2, 1)),
        dropout=float(config.get("dropout") or 0.0),
        num_head_channels=32,
        class_cond=label_dim > 0,
        num_classes=label_dim or 1000,
        null_label=label_dim > 0,
        learn_sigma=learn_sigma,
        use_scale_shift_norm=True,
        resblock_updown=True,
        use_new_attention_order=True,
    )
    if config.get("precond") == "iddpm" and not config.get("discrete"):
        config["discrete"] = {
            "steps": int(config.get("diffusion_steps") or 1000),
            "noise_schedule": config.get("noise_schedule") or "cosine",
            "learn_sigma": learn_sigma,
            "loss": "kl" if config.get("loss") == "vlb" else "hybrid",
            "rescale_timesteps": False,
            "rescale_learned_sigmas": False,
            "respacing": "",
        }
    return kwargs


#: entries for genzoo.diffusion.family's SAMPLERS and ARCH_KWARGS and genzoo.diffusion.losses.LOSSES
SAMPLERS = {"adm-ddpm": _adm_sampler(ddim=False), "adm-ddim": _adm_sampler(ddim=True)}
LOSSES = {"hybrid": HybridLoss, "vlb": VLBLoss}
ARCH_KWARGS = {"adm": adm_network_kwargs}
