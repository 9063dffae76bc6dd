"""Exponential moving averages of the trained players: one implementation for both rules in use.

- constant decay (BigGAN): ``beta = decay`` from ``start_step`` on; before it the average copies the
  weights (BigGAN-PyTorch's ``ema_start``).
- half-life in images with ramp-up (EDM, Karras et al. 2022, training_loop.py):
  ``beta = 0.5 ** (batch / max(h, 1e-8))`` with ``h = min(halflife_images, images_seen * rampup)``.

Parameters are averaged, ``p_ema = beta * p_ema + (1 - beta) * p``; buffers (batch-norm statistics,
spectral-norm vectors) are copied.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass(frozen=True)
class EMARule:
    """Which averaging rule, with its settings. ``halflife_kimg`` set selects EDM's rule."""

    decay: float = 0.9999
    start_step: int = 0
    halflife_kimg: float | None = None
    rampup: float | None = 0.05

    def beta(self, step: int, images_seen: int, batch: int) -> float:
        """The averaging weight of the old EMA at training step ``step``.

        ``images_seen`` counts the images of the steps before this one (EDM's ``cur_nimg``), so the
        first EDM update (ramp-up, 0 images seen) copies the weights.
        """
        if self.halflife_kimg is not None:
            halflife_images = self.halflife_kimg * 1000
            if self.rampup is not None and self.rampup > 0:
                halflife_images = min(halflife_images, images_seen * self.rampup)
            return 0.5 ** (batch / max(halflife_images, 1e-8))
        return 0.0 if step < self.start_step else self.decay

    @classmethod
    def from_config(cls, config: Mapping) -> EMARule:
        """``ema_halflife_kimg`` selects EDM's rule, else ``ema`` a constant decay; neither: EDM 500 kimg."""
        halflife, decay = config.get("ema_halflife_kimg"), config.get("ema")
        if halflife is None and decay is None:
            halflife = DEFAULT_HALFLIFE_KIMG
        rampup = config.get("ema_rampup")
        return cls(decay=float(decay) if decay is not None else 0.9999,
                   start_step=int(config.get("ema_start") or 0),
                   halflife_kimg=float(halflife) if halflife is not None else None,
                   rampup=float(rampup) if rampup is not None else None)


#: EDM's default EMA half-life (training/training_loop.py: ema_halflife_kimg=500)
DEFAULT_HALFLIFE_KIMG = 500.0


class EMA(nn.Module):
    """Averaged copies of some players (``self.players[name]``), never trained directly."""

    def __init__(self, players: Mapping[str, nn.Module], rule: EMARule):
        super().__init__()
        self.rule = rule
        self.players = nn.ModuleDict({name: copy.deepcopy(module).requires_grad_(False).eval()
                                      for name, module in players.items()})

    @torch.no_grad()
    def update(self, source: Mapping[str, nn.Module], step: int, images_seen: int, batch: int) -> float:
        """Average the current weights of ``source[name]`` into each copy; returns the beta used."""
        beta = self.rule.beta(step, images_seen, batch)
        for name, ema in self.players.items():
            net = source[name]
            for p_ema, p_net in zip(ema.parameters(), net.parameters()):
                p_ema.copy_(p_net.detach().lerp(p_ema, beta))
            for b_ema, b_net in zip(ema.buffers(), net.buffers()):
                b_ema.copy_(b_net)
        return beta

    def train(self, mode: bool = True) -> EMA:
        """The copies stay in eval mode whatever the engine's mode."""
        return self
