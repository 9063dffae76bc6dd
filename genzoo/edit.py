"""Zero-shot image editing with any denoiser: consistency models and, through the same interface, diffusion
models (Consistency Models, Sec. 6.3 and Algorithm 4; SDEdit, Meng et al. 2022).

Every edit is a sampling loop over decreasing noise levels whose clean estimate x₀ = D(x, σ) is projected
onto the known data after each evaluation (known pixels, the luma, the patch means):

- a :class:`~genzoo.consistency.ConsistencyModel` runs Algorithm 4 — x₀ ← project(f(x, σ_i)), then
  x ← x₀ + √(σ_{i+1}² − σ_min²)·z — so the result is the last projected x₀;
- a diffusion denoiser runs a projected Euler (DDIM) loop down to σ = 0: x ← x₀ + (σ_{i+1}/σ_i)(x − x₀).

Either way the projection is the last operation, so known pixels are kept exactly (and luma and patch
means up to float rounding). Images are float NCHW in [−1, 1]; ``rng`` gives one noise stream per image
(:class:`genzoo.seeds.StackedRandomGenerator`), so a result depends on its seed only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from genzoo.consistency.model import ConsistencyModel
from genzoo.consistency.sampling import multistep, schedule_sigmas
from genzoo.diffusion.samplers import ddim_step
from genzoo.errors import UserError
from genzoo.gan.latents import slerp_items as slerp
from genzoo.seeds import StackedRandomGenerator

Project = Callable[[torch.Tensor], torch.Tensor]
OPERATIONS = ("inpaint", "colorize", "superres", "stroke", "interpolate", "denoise")
LUMA = (0.2989, 0.5870, 0.1140)
#: default network evaluations per edit: few for a consistency model, more for a diffusion ODE
DEFAULT_STEPS = {"consistency": 10, "diffusion": 32}


def is_consistency(denoiser: Any) -> bool:
    return isinstance(getattr(denoiser, "net", denoiser), ConsistencyModel)


def _sigma_range(denoiser: Any) -> tuple[float, float]:
    """The denoiser's usable σ range, clamped to EDM's [0.002, 80] for unbounded ones."""
    return max(float(denoiser.sigma_min), 0.002), min(float(denoiser.sigma_max), 80.0)


def edit_sigmas(denoiser: Any, steps: int | None = None, ts: Sequence[int] | None = None,
                sigma_start: float | None = None) -> list[float]:
    """Noise levels at which the denoiser is evaluated, from σ_max (or ``sigma_start``) down.

    A consistency model uses its sampling schedule (``steps``/``ts`` as ``genzoo sample``); starting at
    ``sigma_start`` it evaluates a ``steps``-point Karras grid from that σ. A diffusion model gets a
    ``steps``-point Karras grid in [σ_min, σ_start or σ_max].
    """
    lo, hi = _sigma_range(denoiser)
    rho = float(getattr(denoiser, "rho", 7.0))
    consistency = is_consistency(denoiser)
    if steps is None:
        steps = DEFAULT_STEPS["consistency" if consistency else "diffusion"]
    if sigma_start is not None:
        if not lo < sigma_start <= hi:
            raise UserError(f"--sigma: expected a noise level in ({lo:g}, {hi:g}], got {sigma_start:g}")
        hi = float(sigma_start)
        ts = None
    if consistency and sigma_start is None:
        return schedule_sigmas(lo, hi, rho, steps, ts)
    if ts is not None:
        raise UserError("--ts applies to consistency models only; use --steps for a diffusion model")
    from genzoo.diffusion.samplers import sigma_steps

    grid_points = steps + 1 if consistency else steps  # consistency: drop the final σ_min (identity)
    grid = sigma_steps("edm", grid_points, lo, hi, rho)
    sigmas = grid[:steps] if consistency else torch.as_tensor(denoiser.round_sigma(grid), dtype=torch.float64)
    return [float(s) for s in sigmas]


def run(denoiser: Any, x: torch.Tensor, sigmas: Sequence[float], rng: StackedRandomGenerator,
        project: Project | None = None, class_labels: torch.Tensor | None = None,
        **cond: Any) -> torch.Tensor:
    """The shared editing loop: ``x`` is at noise level ``sigmas[0]``; returns the final clean images."""
    if is_consistency(denoiser):
        return multistep(denoiser, x, sigmas, rng.randn_like, _sigma_range(denoiser)[0], class_labels,
                         clip=True, project=project, **cond)
    for i, sigma in enumerate(sigmas):
        x0 = denoiser(x, sigma, class_labels, **cond).float().clamp(-1, 1)
        if project is not None:
            x0 = project(x0)
        sigma_next = sigmas[i + 1] if i + 1 < len(sigmas) else 0.0
        x = ddim_step(x, x0, sigma, sigma_next)
    return x


def _start(rng: StackedRandomGenerator, like: torch.Tensor, sigma: float, base: torch.Tensor | None = None):
    noise = rng.randn_like(like) * sigma
    return noise if base is None else base + noise


def _check_images(denoiser: Any, images: torch.Tensor, what: str = "--image") -> None:
    res = getattr(denoiser, "resolution", None)
    channels = getattr(denoiser, "img_channels", None)
    if images.ndim != 4:
        raise UserError(f"{what}: expected images [N, C, H, W], got shape {tuple(images.shape)}")
    if res is not None and tuple(images.shape[-2:]) != (int(res), int(res)):
        raise UserError(f"{what}: images are {images.shape[-1]}x{images.shape[-2]}, "
                        f"the model makes {res}x{res}")
    if channels and images.shape[1] != int(channels):
        raise UserError(f"{what}: images have {images.shape[1]} channels, the model makes {channels}")


@torch.no_grad()
def inpaint(denoiser: Any, images: torch.Tensor, mask: torch.Tensor, rng: StackedRandomGenerator,
            steps: int | None = None, ts: Sequence[int] | None = None,
            class_labels: torch.Tensor | None = None) -> torch.Tensor:
    """Fill the region where ``mask`` is True ([N or 1, 1, H, W] bool); pixels outside it are kept exactly."""
    _check_images(denoiser, images)
    fill = mask.to(torch.bool).to(images.device).expand(images.shape[0], images.shape[1], *images.shape[2:])
    known = images.float()

    def project(x0: torch.Tensor) -> torch.Tensor:
        return torch.where(fill, x0, known)

    sigmas = edit_sigmas(denoiser, steps, ts)
    return run(denoiser, project(_start(rng, known, sigmas[0])), sigmas, rng, project, class_labels)


def luma_basis(device: torch.device | str = "cpu") -> torch.Tensor:
    """An orthonormal 3×3 basis (columns) whose first vector is the luma direction (.2989, .587, .114)."""
    luma = torch.tensor(LUMA, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.stack([luma, torch.tensor([1.0, 0, 0]).double(),
                                        torch.tensor([0, 1.0, 0]).double()], dim=1))
    q = q * torch.sign(q[:, :1].sum())  # first column points along +luma
    return q.float().to(device)


def luma(images: torch.Tensor) -> torch.Tensor:
    """Luma .2989R + .587G + .114B of NCHW RGB images, [N, 1, H, W]."""
    weights = torch.tensor(LUMA, dtype=images.dtype, device=images.device).reshape(1, 3, 1, 1)
    return (images * weights).sum(1, keepdim=True)


@torch.no_grad()
def colorize(denoiser: Any, images: torch.Tensor, rng: StackedRandomGenerator, steps: int | None = None,
             ts: Sequence[int] | None = None, class_labels: torch.Tensor | None = None) -> torch.Tensor:
    """Colour grayscale images: the luma of ``images`` (RGB, or 1 channel = gray) is kept, the two chroma
    coordinates of an orthonormal basis are generated."""
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    _check_images(denoiser, images)
    if images.shape[1] != 3:
        raise UserError("colorize: needs an RGB model")
    basis = luma_basis(images.device)
    known = torch.einsum("nchw,cd->ndhw", images.float(), basis)[:, :1]

    def project(x0: torch.Tensor) -> torch.Tensor:
        coords = torch.einsum("nchw,cd->ndhw", x0, basis)
        coords = torch.cat([known, coords[:, 1:]], dim=1)
        return torch.einsum("ndhw,cd->nchw", coords, basis)

    sigmas = edit_sigmas(denoiser, steps, ts)
    return run(denoiser, project(_start(rng, images.float(), sigmas[0])), sigmas, rng, project, class_labels)


def patch_means(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Means of the ``factor``×``factor`` patches: the low-resolution image super-resolution keeps."""
    return F.avg_pool2d(images, factor)


@torch.no_grad()
def superres(denoiser: Any, low_res: torch.Tensor, factor: int, rng: StackedRandomGenerator,
             steps: int | None = None, ts: Sequence[int] | None = None,
             class_labels: torch.Tensor | None = None) -> torch.Tensor:
    """Upsample ``low_res`` by ``factor``: each output patch of factor×factor pixels averages to its low-res
    pixel (Consistency Models' patch-average super-resolution)."""
    if factor < 1:
        raise UserError(f"--factor: expected a positive integer, got {factor}")
    res = int(getattr(denoiser, "resolution", low_res.shape[-1] * factor))
    if res % factor or tuple(low_res.shape[-2:]) != (res // factor, res // factor):
        raise UserError(f"--factor {factor}: the low-resolution image must be "
                        f"{res // factor}x{res // factor} for a {res}x{res} model, "
                        f"got {low_res.shape[-1]}x{low_res.shape[-2]}")
    known = low_res.float()
    shape = (low_res.shape[0], low_res.shape[1], res, res)

    def project(x0: torch.Tensor) -> torch.Tensor:
        return x0 + F.interpolate(known - patch_means(x0, factor), scale_factor=factor, mode="nearest")

    sigmas = edit_sigmas(denoiser, steps, ts)
    start = project(_start(rng, torch.empty(shape, device=low_res.device), sigmas[0]))
    return run(denoiser, start, sigmas, rng, project, class_labels)


@torch.no_grad()
def stroke(denoiser: Any, strokes: torch.Tensor, sigma: float, rng: StackedRandomGenerator,
           steps: int | None = None, class_labels: torch.Tensor | None = None) -> torch.Tensor:
    """Stroke-guided generation (SDEdit): noise a stroke painting to ``sigma`` and denoise it."""
    _check_images(denoiser, strokes)
    steps = 1 if steps is None and is_consistency(denoiser) else steps
    sigmas = edit_sigmas(denoiser, steps, sigma_start=sigma)
    return run(denoiser, _start(rng, strokes.float(), sigmas[0], strokes.float()), sigmas, rng, None,
               class_labels)


@torch.no_grad()
def denoise(denoiser: Any, noisy: torch.Tensor, sigma: float, rng: StackedRandomGenerator,
            steps: int | None = None, class_labels: torch.Tensor | None = None) -> torch.Tensor:
    """Remove Gaussian noise of standard deviation ``sigma`` (in [−1, 1] units) from ``noisy``."""
    _check_images(denoiser, noisy)
    steps = 1 if steps is None and is_consistency(denoiser) else steps
    sigmas = edit_sigmas(denoiser, steps, sigma_start=sigma)
    return run(denoiser, noisy.float(), sigmas, rng, None, class_labels)


@torch.no_grad()
def interpolate(denoiser: Any, seed_a: int, seed_b: int, alphas: Sequence[float], steps: int | None = None,
                ts: Sequence[int] | None = None, class_labels: torch.Tensor | None = None,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """Images along the spherical path between the noise of two seeds, one per α in ``alphas`` (α = 0 is
    the sample of ``seed_a``, α = 1 that of ``seed_b``). Consistency models interpolate every noise draw
    of their multistep sampler; diffusion models run EDM's deterministic Heun sampler."""
    res = int(denoiser.resolution)
    channels = int(getattr(denoiser, "img_channels", None) or 3)
    alphas_t = torch.tensor([float(a) for a in alphas])
    n = len(alphas_t)
    rng_a, rng_b = StackedRandomGenerator(device, [seed_a]), StackedRandomGenerator(device, [seed_b])

    def noise(like: torch.Tensor) -> torch.Tensor:
        one = like[:1]
        return slerp(rng_a.randn_like(one).expand_as(like), rng_b.randn_like(one).expand_as(like), alphas_t)

    if class_labels is not None:
        class_labels = class_labels.to(device).expand(n) if class_labels.numel() == 1 else class_labels
    like = torch.empty((n, channels, res, res), device=device)
    if is_consistency(denoiser):
        from genzoo.consistency.sampling import sample

        images, _ = sample(denoiser, noise, like.shape, class_labels, steps=steps, ts=ts, device=device)
        return images
    from genzoo.diffusion.samplers import edm_sampler

    lo, hi = _sigma_range(denoiser)
    out = edm_sampler(denoiser, noise(like), class_labels, num_steps=steps or 18, sigma_min=lo, sigma_max=hi)
    return out.float().clamp(-1, 1)


def noise_image(images: torch.Tensor, sigma: float, rng: StackedRandomGenerator) -> torch.Tensor:
    """``images`` plus Gaussian noise of standard deviation ``sigma`` (inputs for :func:`denoise`)."""
    return images.float() + rng.randn_like(images.float()) * sigma

