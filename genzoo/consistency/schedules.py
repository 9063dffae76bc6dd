"""Discretisation and target-EMA schedules of consistency training, and iCT's noise-pair sampling."""

from __future__ import annotations

import math

import torch

from genzoo.errors import UserError


def ct_num_scales(step: int, total_steps: int, s0: int = 2, s1: int = 150) -> int:
    """Consistency Models, Appendix C: N(k) = ⌈√(k/K·((s₁+1)² − s₀²) + s₀²) − 1⌉ + 1 (at least 2)."""
    _check_total(total_steps)
    frac = min(max(step, 0), total_steps) / total_steps
    inner = math.ceil(math.sqrt(frac * ((s1 + 1) ** 2 - s0 ** 2) + s0 ** 2) - 1)
    return max(inner, 1) + 1


def ct_target_ema(step: int, total_steps: int, s0: int = 2, s1: int = 150, mu0: float = 0.95) -> float:
    """Consistency Models, Appendix C: μ(k) = exp(s₀·ln μ₀ / N(k)).

    (The released code divides by N(k) − 1 instead; the paper's formula is used here.)
    """
    return math.exp(s0 * math.log(mu0) / ct_num_scales(step, total_steps, s0, s1))


def ict_num_scales(step: int, total_steps: int, s0: int = 10, s1: int = 1280) -> int:
    """Improved Techniques for Training Consistency Models (Song & Dhariwal 2023), Eq. 5:
    N(k) = min(s₀·2^⌊k/K'⌋, s₁) + 1 with K' = ⌊K / (log₂⌊s₁/s₀⌋ + 1)⌋ (N doubles K/K' times)."""
    _check_total(total_steps)
    stages = math.floor(math.log2(max(s1 // s0, 1))) + 1
    stage_len = max(total_steps // stages, 1)
    return min(s0 * 2 ** (max(step, 0) // stage_len), s1) + 1


def ict_pair_probabilities(sigmas: torch.Tensor, p_mean: float = -1.1, p_std: float = 2.0) -> torch.Tensor:
    """iCT Eq. 8: p(σ_i, σ_{i+1}) ∝ erf((ln σ_{i+1} − P_mean)/(√2 P_std)) − erf((ln σ_i − P_mean)/(√2 P_std)),
    for an ascending grid ``sigmas``; one probability per adjacent pair (len(sigmas) − 1 of them)."""
    cdf = torch.erf((sigmas.double().log() - p_mean) / (math.sqrt(2) * p_std))
    weights = (cdf[1:] - cdf[:-1]).clamp_min(0)
    return weights / weights.sum()


def lognormal_sigmas(n: int, p_mean: float, p_std: float, sigma_min: float, sigma_max: float,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """iCT Sec. 3.5 / ECT: n noise levels with ln σ ~ N(P_mean, P_std²), clamped to [σ_min, σ_max]."""
    return (torch.randn(n, device=device) * p_std + p_mean).exp().clamp(sigma_min, sigma_max)


def _check_total(total_steps: int) -> None:
    if total_steps <= 0:
        raise UserError(f"consistency training: the N(k) schedule needs the total number of training steps, "
                        f"got {total_steps}")


#: ECT's Δt mapping constants (locuslab/ect, CIFAR-10): shrink factor q per stage, sigmoid k and b
ECT_Q, ECT_K, ECT_B = 2.0, 8.0, 1.0
#: stages of the shrinking-Δt curriculum over a run (stage 0 is diffusion training: r = 0)
ECT_STAGES = 8


def ect_stage(step: int, total_steps: int, stages: int = ECT_STAGES) -> int:
    """The stage s ∈ {0, …, stages−1} at training step ``step``: the run split into equal stages."""
    _check_total(total_steps)
    if stages < 1:
        raise UserError(f"--ect-stages: expected at least 1 stage, got {stages}")
    return min(max(step, 0) * stages // total_steps, stages - 1)


def ect_r(t: torch.Tensor, stage: int, q: float = ECT_Q, k: float = ECT_K, b: float = ECT_B) -> torch.Tensor:
    """ECT (Geng et al. 2024) mapping t → r = t − Δt with Δt = t·q^(−s)·(1 + k·sigmoid(−b·t)), r clamped at 0.

    Stage s = 0 gives Δt ≥ t, so r = 0 everywhere: the start of tuning is diffusion training (the ECT paper's
    Δt = t). Stage s ≥ 1 is the released code's stage s − 1; Δt → 0 as s grows, with relatively larger steps
    at small t (the sigmoid adjustment).
    """
    delta = t * q ** (-float(stage)) * (1 + k * torch.sigmoid(-b * t))
    return (t - delta).clamp_min(0)
