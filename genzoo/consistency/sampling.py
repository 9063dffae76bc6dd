"""Sampling a consistency model: one step, multistep on explicit grid indices, and the search for the best
middle step of a two-step schedule.

Consistency Models, Algorithm 1: x₀ = f(σ_max·z, σ_max); then for each further time τ,
x = x₀ + z·√(τ² − σ_min²) and x₀ = f(x, τ).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from genzoo.consistency.model import karras_index_sigmas
from genzoo.errors import UserError

NoiseFn = Callable[[torch.Tensor], torch.Tensor]


def parse_ts(text: str | Sequence[int] | None) -> list[int] | None:
    """``--ts 0,22,39`` -> [0, 22, 39] (ascending grid indices)."""
    if text is None or text == "":
        return None
    if isinstance(text, str):
        try:
            ts = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise UserError(f"--ts: expected grid indices like 0,22,39, got {text!r}") from None
    else:
        ts = [int(v) for v in text]
    if not ts or any(b <= a for a, b in zip(ts, ts[1:])) or ts[0] < 0:
        raise UserError(f"--ts: expected strictly increasing non-negative indices, got {text!r}")
    return ts


def parse_sigmas(text: str | Sequence[float] | None, sigma_min: float,
                 sigma_max: float) -> list[float] | None:
    """``--sigmas 80,0.8`` -> [80.0, 0.8]: explicit noise levels of the evaluations, strictly decreasing,
    each in (σ_min, σ_max] (f is the identity at σ_min; the model never saw σ above σ_max)."""
    if text is None or text == "":
        return None
    try:
        sigmas = [float(v) for v in text.split(",") if v.strip()] if isinstance(text, str) else [
            float(v) for v in text]
    except ValueError:
        raise UserError(f"--sigmas: expected noise levels like 80,0.8, got {text!r}") from None
    if not sigmas:
        raise UserError(f"--sigmas: expected noise levels like 80,0.8, got {text!r}")
    given = ",".join(f"{s:g}" for s in sigmas)
    if any(not sigma_min < s <= sigma_max for s in sigmas):
        raise UserError(f"--sigmas: expected noise levels in (σ_min, σ_max] = ({sigma_min:g}, "
                        f"{sigma_max:g}], got {given}")
    if any(b >= a for a, b in zip(sigmas, sigmas[1:])):
        raise UserError(f"--sigmas: expected strictly decreasing noise levels, got {given}")
    return sigmas


def schedule_sigmas(sigma_min: float, sigma_max: float, rho: float, steps: int | None = None,
                    ts: Sequence[int] | None = None) -> list[float]:
    """The noise levels at which f is evaluated.

    With ``ts``: the grid points ``ts`` of a ``steps``-point Karras grid (index 0 = σ_max, steps−1 = σ_min),
    as the released sampler; points at σ_min are skipped because f(x, σ_min) = x. Without ``ts``:
    ``steps`` evaluations at the first ``steps`` points of a (steps+1)-point grid (``steps=1``: one step).
    """
    if ts is None:
        steps = 1 if steps is None else int(steps)
        if steps < 1:
            raise UserError(f"--steps: expected at least 1 network evaluation, got {steps}")
        grid = karras_index_sigmas(steps + 1, sigma_min, sigma_max, rho)
        return [float(s) for s in grid[:steps]]
    if steps is None or steps < 2:
        raise UserError(f"--ts needs --steps N, the size of the grid it indexes (N >= 2), got {steps}")
    if max(ts) > steps - 1:
        raise UserError(f"--ts: index {max(ts)} is outside the {steps}-point grid (0..{steps - 1})")
    grid = karras_index_sigmas(steps, sigma_min, sigma_max, rho)
    sigmas = [float(grid[i]) for i in ts if i < steps - 1]
    if not sigmas:
        raise UserError(f"--ts {','.join(map(str, ts))}: every index is the last grid point (σ_min)")
    return sigmas


def multistep(f: Callable[..., torch.Tensor], x: torch.Tensor, sigmas: Sequence[float], noise: NoiseFn,
              sigma_min: float, class_labels: torch.Tensor | None = None, clip: bool = True,
              project: Callable[[torch.Tensor], torch.Tensor] | None = None, **cond: Any) -> torch.Tensor:
    """Consistency Models, Algorithm 1 (and Algorithm 4 with ``project``): ``x`` is already at noise
    level ``sigmas[0]``. Each step denoises, clips to [−1, 1], optionally projects onto the known data
    (the zero-shot edits) and re-noises to the next level with √(σ² − σ_min²)."""
    x0 = x
    for i, sigma in enumerate(sigmas):
        x0 = f(x, sigma, class_labels, **cond)
        if clip:
            x0 = x0.clamp(-1, 1)
        if project is not None:
            x0 = project(x0)
        if i + 1 < len(sigmas):
            x = x0 + noise(x0) * math.sqrt(max(sigmas[i + 1] ** 2 - sigma_min ** 2, 0.0))
    return x0


@torch.no_grad()
def sample(model: Any, noise: NoiseFn, shape: Sequence[int], class_labels: torch.Tensor | None = None,
           steps: int | None = None, ts: Sequence[int] | None = None, device: torch.device | str = "cpu",
           clip: bool = True, sigmas: Sequence[float] | None = None, **cond: Any) -> tuple[torch.Tensor, int]:
    """Images from a consistency model (a ConsistencyModel): (float NCHW in [−1, 1], network evaluations).
    ``sigmas`` (checked by :func:`parse_sigmas`) replaces the schedule of ``steps``/``ts``."""
    if sigmas is None:
        sigmas = schedule_sigmas(model.sigma_min, model.sigma_max, getattr(model, "rho", 7.0), steps, ts)
    elif steps is not None or ts is not None:
        raise ValueError("give the noise levels sigmas or a schedule (steps, ts), not both")
    sigmas = [float(s) for s in sigmas]
    x = noise(torch.empty(tuple(shape), device=device)) * sigmas[0]
    images = multistep(model, x, sigmas, noise, model.sigma_min, class_labels, clip=clip, **cond)
    return images, len(sigmas)


def ternary_search(metric: Callable[[int], float], lo: int, hi: int) -> tuple[int, float, dict[int, float]]:
    """Integer ternary search for the minimiser of a unimodal ``metric`` on [lo, hi] (each value computed
    once). Returns (best index, its value, every evaluated index -> value)."""
    if hi < lo:
        raise ValueError(f"empty search range [{lo}, {hi}]")
    seen: dict[int, float] = {}

    def value(i: int) -> float:
        if i not in seen:
            seen[i] = float(metric(i))
        return seen[i]

    while hi - lo > 2:
        third = (hi - lo) // 3
        m1, m2 = lo + third, hi - third
        if value(m1) < value(m2):
            hi = m2 - 1
        elif value(m1) > value(m2):
            lo = m1 + 1
        else:
            lo, hi = m1, m2
    best = min(range(lo, hi + 1), key=value)
    return best, seen[best], dict(sorted(seen.items()))


def pixel_frechet(reference: torch.Tensor, size: int = 8) -> Callable[[torch.Tensor], float]:
    """A cheap held-out metric: the Fréchet distance between Gaussian fits of ``size``×``size`` average-pooled
    pixels of generated images and of ``reference`` (uint8 or [−1, 1] NCHW). Use FID for real studies."""
    from genzoo.io.images import from_uint8
    from genzoo.metrics.stats import frechet_distance_features

    def features(images: torch.Tensor) -> np.ndarray:
        images = from_uint8(images) if images.dtype == torch.uint8 else images.float()
        return torch.nn.functional.adaptive_avg_pool2d(images, size).flatten(1).cpu().numpy()

    ref = features(reference)
    return lambda images: frechet_distance_features(features(images), ref)


def search_middle_step(model: Any, metric: Callable[[torch.Tensor], float], seeds: Sequence[int],
                       steps: int = 40, batch_size: int = 64,
                       class_labels: torch.Tensor | None = None) -> tuple[int, float, dict[int, float]]:
    """Best middle index m of the two-step schedule ``ts = 0, m, steps−1`` by ternary search on ``metric``
    (images in [−1, 1] -> a number to minimise, e.g. FID against held-out data), as the released
    ``ternary_search`` script does. Returns (m, metric value, all evaluated m -> value)."""
    from genzoo.seeds import StackedRandomGenerator, batches

    device = next(model.parameters()).device
    channels = int(getattr(model, "img_channels", None) or 3)
    shape = (channels, model.resolution, model.resolution)

    def evaluate(middle: int) -> float:
        images, start = [], 0
        for chunk in batches(list(seeds), batch_size):
            rng = StackedRandomGenerator(device, chunk)
            labels = class_labels[start:start + len(chunk)] if class_labels is not None else None
            start += len(chunk)
            out, _ = sample(model, rng.randn_like, (len(chunk), *shape), labels, steps=steps,
                            ts=[0, middle, steps - 1], device=device)
            images.append(out)
        return metric(torch.cat(images))

    return ternary_search(evaluate, 1, steps - 2)
