"""Consistency models (Song, Dhariwal, Chen & Sutskever 2023; improved training, Song & Dhariwal 2023).

The consistency function f(x, σ) is a denoiser with the boundary condition f(x, σ_min) = x
(:class:`ConsistencyModel`); it is trained by distillation from any genzoo diffusion model (CD), from
scratch (CT) or with the improved recipe (iCT), and sampled in one or a few steps.
"""

from genzoo.consistency.model import ConsistencyModel, karras_index_sigmas, scalings
from genzoo.consistency.sampling import (
    multistep,
    parse_sigmas,
    parse_ts,
    sample,
    search_middle_step,
    ternary_search,
)
from genzoo.consistency.schedules import ct_num_scales, ct_target_ema, ict_num_scales, ict_pair_probabilities

__all__ = ["ConsistencyModel", "ct_num_scales", "ct_target_ema", "ict_num_scales", "ict_pair_probabilities",
           "karras_index_sigmas", "multistep", "parse_sigmas", "parse_ts", "sample", "scalings",
           "search_middle_step", "ternary_search"]
