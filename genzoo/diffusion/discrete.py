"""Discrete-time Gaussian diffusion as in DDPM, iDDPM and ADM (Ho et al. 2020; Nichol & Dhariwal 2021;
Dhariwal & Nichol 2021).

The forward process q(x_t | x_0) = N(√ᾱ_t x_0, (1−ᾱ_t) I) over T steps with a linear or cosine β
schedule; an ε-predicting network with fixed or learned (interpolated log-) variances; the hybrid loss
L_simple + λ·L_vlb; timestep respacing with the public syntax (``"250"``, ``"ddim25"``, ``"10,10,10"``);
ancestral and DDIM sampling, each with classifier guidance. The schedule coefficients are computed in
float64 and applied in float32, as in the public code.

:mod:`genzoo.diffusion.discrete_denoiser` runs the same network as an EDM denoiser (the iDDPM
preconditioning on the model's own σ grid), so every sampler of :mod:`genzoo.diffusion.samplers` applies
to it; :mod:`genzoo.diffusion.adm` holds the diffusion family's ADM adapters (samplers, classifier
guidance, ``--arch adm``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from genzoo.errors import UserError
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


# ----------------------------------------------------------------------------- training losses


class HybridLoss:
    """The diffusion family's ``--loss hybrid``: iDDPM's L_simple + λ·L_vlb (or L_vlb alone for a process
    with ``loss: kl``) at t uniform over the steps, per example; needs a network with its process
    (:class:`~genzoo.diffusion.discrete_denoiser.DiscreteDenoiser`)."""

    def __call__(
        self,
        net: Any,
        images: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        augment_pipe: Any = None,
        rng: Any = None,
    ) -> torch.Tensor:
        if not isinstance(getattr(net, "diffusion", None), DiscreteDiffusion):
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
        diffusion = getattr(net, "diffusion", None)
        if not isinstance(diffusion, DiscreteDiffusion) or diffusion.loss_type != "kl":
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


#: the diffusion family's losses of this process (genzoo.diffusion.losses.LOSSES includes them)
LOSSES = {"hybrid": HybridLoss, "vlb": VLBLoss}
