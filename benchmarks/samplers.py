"""Samplers on an exact benchmark: a Gaussian mixture, whose ideal denoiser is closed form.

For every sampler and time discretisation at NFE ≈ 5, 10, 20, 35, 79 this prints
  FD    Fréchet distance between the generated samples' mean/covariance and the true ones,
  SW    sliced Wasserstein-1 distance to as many exact samples (the floor of two exact sets is printed),
  err   RMS per-coordinate distance to a high-accuracy solution of the probability-flow ODE from the
        same noise (deterministic samplers only; the reference is Heun with 1024 steps down to σ = 1e-5).
Run: ``python benchmarks/samplers.py [--samples 10000] [--dim 6]`` (about 1–3 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from genzoo.diffusion import samplers as S
from genzoo.diffusion.analytic import AnalyticDenoiser, random_mixture

NFES = (5, 10, 20, 35, 79)
DISCRETIZATIONS = ("edm", "vp", "ve", "iddpm")


def frechet_distance(x: torch.Tensor, mu: torch.Tensor, cov: torch.Tensor) -> float:
    """‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2(Σ₁^½ Σ₂ Σ₁^½)^½) between the samples' moments and the true ones."""
    mu_x, cov_x = x.mean(0), x.T.cov()
    eig, vec = torch.linalg.eigh(cov)
    root = vec @ torch.diag(eig.clamp(min=0).sqrt()) @ vec.T
    cross = torch.linalg.eigvalsh(root @ cov_x @ root).clamp(min=0).sqrt().sum()
    return float((mu_x - mu).square().sum() + cov_x.trace() + cov.trace() - 2 * cross)


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, projections: int = 256, seed: int = 0) -> float:
    """Mean over random unit directions of the 1-D Wasserstein-1 distance of the projections."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(x.shape[1], projections, dtype=x.dtype, generator=g)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    px, py = (x @ dirs).sort(0).values, (y @ dirs).sort(0).values
    return float((px - py).abs().mean())


def steps_for(sampler: str, nfe: int) -> int:
    """Solver steps whose NFE is closest to ``nfe`` (Heun: 2N − 1)."""
    return max(2, round((nfe + 1) / 2)) if sampler.startswith("heun") else nfe


#: name -> (sampler, extra keyword arguments); stochastic ones also get ``randn_like``.
SAMPLERS = {
    "euler": (S.euler_sampler, {}),
    "heun": (S.heun_sampler, {}),
    "heun-vp-ode": (S.heun_sampler, dict(schedule="vp", scaling="vp")),
    "heun-churn": (S.heun_sampler, dict(S_churn=20, S_min=0.05, S_max=50, S_noise=1.003)),
    "ddim": (S.ddim_sampler, {}),
    "ddpm": (S.ddpm_sampler, {}),
    "dpmpp2m": (S.dpmpp_2m_sampler, {}),
}
STOCHASTIC = {"heun-churn", "ddpm"}


def reference_solution(D, z: torch.Tensor, sigma_max: float, steps: int = 512) -> torch.Tensor:
    """The PF-ODE from σ_max to σ = 0: Heun on the ρ = 7 grid down to σ = 1e-5, then D."""
    return S.heun_sampler(D, z, num_steps=steps, sigma_min=1e-5, sigma_max=sigma_max, discretization="edm")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=6)
    parser.add_argument("--components", type=int, default=8)
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    torch.set_num_threads(1)  # small float64 batches: one thread is faster than two on a shared machine
    start, cpu_start = time.perf_counter(), time.process_time()

    mixture = random_mixture(dim=args.dim, components=args.components, seed=0)
    D = AnalyticDenoiser(mixture)
    mu, cov = mixture.mean(), mixture.covariance()
    exact, _ = mixture.sample(args.samples, torch.Generator().manual_seed(1))
    exact2, _ = mixture.sample(args.samples, torch.Generator().manual_seed(2))
    z = torch.randn(args.samples, args.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    print(f"# Gaussian mixture: {args.dim}-d, {args.components} components, σ_data {mixture.sigma_data:.3f}; "
          f"{args.samples} samples")
    print(f"# floor (exact samples): FD {frechet_distance(exact2, mu, cov):.5f}  "
          f"SW {sliced_wasserstein(exact2, exact):.5f}")

    references: dict[float, torch.Tensor] = {}
    rows = []
    for disc in DISCRETIZATIONS:
        lo, hi = S.default_sigma_range(disc)
        hi = float(S.noise_levels(D, disc, 2, lo, hi)[0])  # σ_max actually used (iddpm snaps to its grid)
        if hi not in references:
            references[hi] = reference_solution(D, z, hi)
        for name, (sampler, kw) in SAMPLERS.items():
            for nfe_target in NFES:
                steps = steps_for(name, nfe_target)
                counter = S.NFECounter(D)
                if name in STOCHASTIC:
                    g = torch.Generator().manual_seed(4)
                    kw = dict(kw, randn_like=lambda t, g=g: torch.randn(t.shape, dtype=t.dtype, generator=g))
                x = sampler(counter, z, num_steps=steps, discretization=disc, **kw)
                err = math.nan if name in STOCHASTIC else float((x - references[hi]).square().mean().sqrt())
                rows.append((name, disc, steps, counter.nfe, frechet_distance(x, mu, cov),
                             sliced_wasserstein(x, exact), err))

    header = ("sampler", "discretisation", "steps", "NFE", "FD", "SW", "err vs ODE")
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for r in rows:
            err = "—" if math.isnan(r[6]) else f"{r[6]:.4f}"
            print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]:.4f} | {r[5]:.4f} | {err} |")
    else:
        print("{:<12} {:<14} {:>5} {:>4} {:>9} {:>8} {:>10}".format(*header))
        for r in rows:
            print(f"{r[0]:<12} {r[1]:<14} {r[2]:>5} {r[3]:>4} {r[4]:>9.4f} {r[5]:>8.4f} {r[6]:>10.4f}")
    print(f"# {time.perf_counter() - start:.0f} s wall-clock, {time.process_time() - cpu_start:.0f} s CPU")


if __name__ == "__main__":
    main()
