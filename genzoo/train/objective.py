"""The contract between a family and the training engine.

A family supplies an :class:`Objective`: the networks it trains (its *players*), how each player's
optimiser is set up, in which order the players step, and the loss of one micro-batch. The engine
owns everything else: data, optimisers, gradient accumulation, EMA, precision, DDP, checkpoints,
logging and resuming.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn


@dataclass
class Batch:
    """One micro-batch as the objective sees it."""

    images: torch.Tensor  # float32 [N, C, H, W] in [-1, 1], on the training device
    labels: torch.Tensor  # int64 [N]; -1 where the item has no label
    captions: list[str] | None = None  # one per item, for text-conditional families
    indices: torch.Tensor | None = None  # dataset indices of the items
    #: per-sample noise (genzoo.seeds.StackedRandomGenerator): sample i's draws depend on the run seed,
    #: the step and its place in the global batch only, so they are the same for any split of the batch
    #: over processes and accumulation rounds. Set by the engine; ``torch.randn`` works too but is not.
    rng: Any = None


@dataclass
class OptimizerSpec:
    """Adam(W) settings for one player; the engine builds the optimiser from it."""

    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_images: float = 0.0  # linear learning-rate ramp-up over this many images (EDM: 10M)
    decay_images: float = 0.0  # inverse square-root decay after this many images (EDM2's t_ref); 0 = none
    #: learning-rate multipliers by parameter-name prefix within the player (e.g. {"text.": 0.1});
    #: the longest matching prefix wins, other parameters get 1
    lr_mul: dict[str, float] = field(default_factory=dict)


def learning_rate(lr: float, images_seen: float, warmup_images: float = 0.0,
                  decay_images: float = 0.0) -> float:
    """α_ref/√max(t/t_ref, 1) (EDM2's inverse square-root decay; t and t_ref in images), times the linear
    ramp-up min(t/warmup, 1) of EDM and EDM2; t is the number of images seen before this update."""
    if decay_images > 0:
        lr = lr / math.sqrt(max(images_seen / decay_images, 1.0))
    if warmup_images > 0:
        lr = lr * min(images_seen / warmup_images, 1.0)
    return lr


@dataclass
class StepResult:
    """What a loss call returns: the scalar to minimise and numbers to log."""

    loss: torch.Tensor
    logs: dict[str, float] = field(default_factory=dict)


class Objective(nn.Module):
    """Base class of every family's training objective.

    Subclasses put their trainable networks in ``self.players`` (an ``nn.ModuleDict``; saved as
    ``model.safetensors`` with keys ``"<player>.<param>"``). Any other persistent state (e.g. a
    consistency target network) is ordinary module state outside ``players``; the engine saves it
    as ``objective.safetensors``. Networks that must never be saved (a frozen teacher) are kept out
    of the module tree (``object.__setattr__``).
    """

    players: nn.ModuleDict
    #: players whose exponential moving average the engine keeps (sampling uses the EMA copy)
    ema_players: tuple[str, ...] = ()
    #: the player that generates: ``genzoo.load`` returns it
    sampled_player: str = "net"

    def optimizer_specs(self) -> dict[str, OptimizerSpec]:
        """One optimiser spec per player name."""
        raise NotImplementedError

    def schedule(self) -> list[tuple[str, int]]:
        """Player updates in one training step, in order: e.g. ``[("D", 2), ("G", 1)]``."""
        return [(name, 1) for name in self.players]

    def loss(self, player: str, batch: Batch, step: int) -> StepResult:
        """The mean loss of ``player`` on one micro-batch at training step ``step``."""
        raise NotImplementedError

    def after_update(self, player: str, step: int) -> None:
        """Called after the optimiser step of ``player`` (e.g. to update a target network)."""
