"""The consistency function f(x, σ) with its boundary condition f(x, σ_min) = x.

Song et al. 2023, "Consistency Models", Appendix C: f(x, σ) = c_skip(σ)·x + c_out(σ)·F(c_in(σ)·x, c_noise(σ)),
where c_skip(σ_min) = 1 and c_out(σ_min) = 0 make the boundary condition hold exactly.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from genzoo.diffusion.precond import Denoiser

SIGMA_MIN = 0.002
SIGMA_MAX = 80.0
SIGMA_DATA = 0.5
RHO = 7.0


def scalings(sigma: torch.Tensor | float, sigma_data: float = SIGMA_DATA,
             sigma_min: float = SIGMA_MIN) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Boundary-condition scalings (c_skip, c_out, c_in) of Consistency Models, Appendix C:
    c_skip = σ_d²/((σ−σ_min)²+σ_d²), c_out = (σ−σ_min)σ_d/√(σ²+σ_d²), c_in = 1/√(σ²+σ_d²)."""
    sigma = torch.as_tensor(sigma)
    if not sigma.is_floating_point():
        sigma = sigma.double()
    c_skip = sigma_data ** 2 / ((sigma - sigma_min) ** 2 + sigma_data ** 2)
    c_out = (sigma - sigma_min) * sigma_data / (sigma ** 2 + sigma_data ** 2).sqrt()
    c_in = 1 / (sigma ** 2 + sigma_data ** 2).sqrt()
    return c_skip, c_out, c_in


class ConsistencyModel(Denoiser):
    """A consistency function with the Denoiser interface: ``f(x, sigma, class_labels=None, **cond) -> x0``.

    ``model`` is any genzoo diffusion-style network ``model(x, noise_labels, class_labels, **cond)``
    (saved as ``model.*``, as in every genzoo denoiser). ``time_scale`` sets the network's time input
    c_noise = time_scale·ln σ: 0.25 as EDM (so a student starts from an EDM teacher's network), 250 for
    the released consistency-model checkpoints (ADM networks fed 1000·¼ ln σ).
    """

    def __init__(self, model: nn.Module, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX,
                 sigma_data: float = SIGMA_DATA, time_scale: float = 0.25, rho: float = RHO):
        super().__init__(model)
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self.sigma_data = float(sigma_data)
        self.time_scale = float(time_scale)
        self.rho = float(rho)

    def scalings(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        c_skip, c_out, c_in = scalings(sigma, self.sigma_data, self.sigma_min)
        return c_skip, c_out, c_in, self.time_scale * sigma.log()

    def extra_repr(self) -> str:
        return (f"sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, sigma_data={self.sigma_data}, "
                f"time_scale={self.time_scale}")


def karras_index_sigmas(num_scales: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX,
                        rho: float = RHO) -> torch.Tensor:
    """The N-point Karras grid (EDM eq. 5) indexed as in Consistency Models: index 0 is σ_max, N−1 is σ_min
    (float64, no trailing zero: a consistency model is never evaluated at σ = 0)."""
    from genzoo.diffusion.samplers import sigma_steps

    return sigma_steps("edm", num_scales, sigma_min, sigma_max, rho)
