"""Closed forms shared by several test files."""

from __future__ import annotations

import torch


def heun_nfe(num_steps: int, lo: float, hi: float, cost_inside: int) -> int:
    """Network evaluations per image of EDM's Heun sampler when σ in (lo, hi] costs ``cost_inside``:
    Heun evaluates σ_0..σ_{N−1} and the corrections at σ_1..σ_{N−1} (EDM eq. 5 grid, float64)."""
    i = torch.arange(num_steps, dtype=torch.float64)
    rho, smin, smax = 7.0, 0.002, 80.0
    sig = (smax ** (1 / rho) + i / (num_steps - 1) * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
    evaluated = torch.cat([sig, sig[1:]])
    inside = (evaluated > lo) & (evaluated <= hi)
    return int(len(evaluated) + (cost_inside - 1) * int(inside.sum()))
