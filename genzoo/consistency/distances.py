"""Distances d(x, y) between consistency outputs, one value per sample.

l2 and l1 are per-pixel means as in the released code; ``l2-32`` compares bilinear 32×32 resizes;
pseudo-Huber is iCT's √(‖x−y‖² + c²) − c with c = 0.00054·√dim (Song & Dhariwal 2023, Sec. 3.3).
LPIPS needs a weights file supplied by the user (see :mod:`genzoo.nets.lpips`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from genzoo.errors import UserError

DISTANCES = ("l2", "l1", "l2-32", "pseudo-huber", "lpips")


def l2(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x - y).square().flatten(1).mean(1)


def l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x - y).abs().flatten(1).mean(1)


def l2_32(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if x.shape[-1] != 32 or x.shape[-2] != 32:
        x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
        y = F.interpolate(y, size=(32, 32), mode="bilinear", align_corners=False)
    return l2(x, y)


def pseudo_huber(x: torch.Tensor, y: torch.Tensor, c: float | None = None) -> torch.Tensor:
    """iCT's pseudo-Huber metric √(‖x−y‖₂² + c²) − c, c = 0.00054·√(C·H·W) by default."""
    if c is None:
        c = 0.00054 * math.sqrt(x[0].numel())
    return ((x - y).square().flatten(1).sum(1) + c * c).sqrt() - c


def get_distance(name: str, lpips_weights: str | None = None, lpips_size: int | None = None,
                 lpips_mix: float | None = None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The distance called ``name`` (``--distance``); ``lpips`` needs ``--lpips-weights FILE`` and takes
    ``--lpips-size`` (its working resolution; default 224 below 256 px, the consistency-models usage).
    ``lpips_mix`` λ (``--lpips-mix``) adds λ·LPIPS to another distance: d(x, y) + λ·LPIPS(x, y)."""
    if lpips_mix is not None:
        if name == "lpips" or not lpips_mix > 0:
            raise UserError(f"--lpips-mix: expected a weight > 0 added to another --distance than lpips, got "
                            f"{lpips_mix} with --distance {name}")
        base, perceptual = get_distance(name), _lpips(lpips_weights, lpips_size, "--lpips-mix")
        return lambda x, y: base(x, y) + lpips_mix * perceptual(x, y)
    if lpips_size is not None and name != "lpips":
        raise UserError(f"--lpips-size: only --distance lpips (or --lpips-mix) has a working resolution "
                        f"(--distance {name})")
    if name == "l2":
        return l2
    if name == "l1":
        return l1
    if name == "l2-32":
        return l2_32
    if name == "pseudo-huber":
        return pseudo_huber
    if name == "lpips":
        return _lpips(lpips_weights, lpips_size, "--distance lpips")
    raise UserError(f"--distance: unknown distance {name!r}; expected one of {', '.join(DISTANCES)}")


Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _lpips(weights: str | None, size: int | None, flag: str) -> Distance:
    if not weights:
        raise UserError(f"{flag}: give the LPIPS weights file with --lpips-weights FILE "
                        "(genzoo never downloads weights)")
    from genzoo.nets.lpips import LPIPS, check_size

    if size is not None:
        check_size(size)
    return functools.partial(LPIPS.from_file(weights).distance, size=size)
