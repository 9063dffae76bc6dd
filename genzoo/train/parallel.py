"""How the engine averages a player's gradients over the processes of a ``torchrun`` run.

- An objective that optimises one network per step (diffusion, consistency without a discriminator, a
  noise-aware classifier: its ``schedule()`` names one player) runs its loss through
  ``DistributedDataParallel``: gradients are all-reduced in buckets while the backward pass is still
  running, and micro-batches of an accumulated update skip the reduction (``no_sync``) until the last.
- With ``--fsdp`` that network is sharded instead (``torch.distributed.fsdp.fully_shard``, FSDP2):
  parameters, gradients and optimiser state are split over the ranks and gathered per forward, for a
  network that does not fit one device. The engine reads full weights through :meth:`GradientSync.full`
  (EMA, target networks, checkpoints) and full optimiser state through
  ``torch.distributed.checkpoint.state_dict``.
- Objectives with several players per step (GAN phases: D's loss runs G, G's loss runs D) keep the flat
  ``all_reduce`` after the backward passes (:func:`genzoo.train.distributed.average_gradients`), because a
  wrapper would synchronise the gradients of networks that the phase does not update.

The loss goes through a module call (:class:`PlayerLoss`) so that DDP's forward, which arms its
gradient hooks, sees it; the objective keeps calling its networks as it likes.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn as nn

from genzoo.errors import UserError
from genzoo.train import distributed as ddp
from genzoo.train.objective import Batch, Objective, StepResult


class PlayerLoss(nn.Module):
    """``objective.loss(player, batch, step)`` as a module whose parameters are the objective's."""

    def __init__(self, objective: Objective, player: str):
        super().__init__()
        self.objective, self.player = objective, player

    def forward(self, batch: Batch, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        result = self.objective.loss(self.player, batch, step)
        return result.loss, result.logs


def single_player(objective: Objective) -> str | None:
    """The player of an objective that optimises one network per step, else None."""
    players = {name for name, _ in objective.schedule()}
    return players.pop() if len(players) == 1 else None


class GradientSync:
    """Per player: DDP, FSDP or the flat all_reduce (see the module docstring)."""

    def __init__(self, objective: Objective, world: int, device: torch.device, fsdp: bool = False):
        self.objective, self.world, self.device = objective, world, device
        self.player = single_player(objective)
        self.fsdp = bool(fsdp)
        self.wrapped: nn.Module | None = None
        if self.fsdp and world < 2:
            raise UserError("--fsdp: shards the network over the processes of a torchrun run; start it with "
                            "torchrun --nproc_per_node=N (N >= 2) -m genzoo train ...")
        if self.fsdp and self.player is None:
            raise UserError("--fsdp: shards the network of an objective that trains one network per step "
                            f"(diffusion, consistency); this one updates {len(objective.players)} in turn "
                            "(a GAN): drop --fsdp")
        if self.fsdp:
            self._shard(objective.players[self.player])
        elif world > 1 and self.player is not None:
            self.wrapped = nn.parallel.DistributedDataParallel(
                PlayerLoss(objective, self.player),
                device_ids=[device.index] if device.type == "cuda" else None,
                broadcast_buffers=False,  # each rank's buffers are its own, as with the flat reduce
                find_unused_parameters=True)  # e.g. a label embedding that a micro-batch never touches

    def _shard(self, net: nn.Module) -> None:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        self.mirror = copy.deepcopy(net)  # the whole network that full() gathers the shards into
        fully_shard(net, mesh=init_device_mesh(self.device.type, (self.world,)))
        self.wrapped = net

    def mode(self, player: str) -> str:
        if player != self.player or self.wrapped is None:
            return "all_reduce" if self.world > 1 else "local"
        return "fsdp" if self.fsdp else "ddp"

    def loss(self, player: str, batch: Batch, step: int) -> StepResult:
        if self.mode(player) == "ddp":
            loss, logs = self.wrapped(batch, step)
            return StepResult(loss, logs)
        return self.objective.loss(player, batch, step)

    @contextlib.contextmanager
    def micro_batch(self, player: str, last: bool) -> Iterator[None]:
        """Around the forward and backward pass of one micro-batch: only the last one of an update
        synchronises gradients (DDP's ``no_sync``, FSDP's ``set_requires_gradient_sync``)."""
        mode = self.mode(player)
        if mode == "ddp" and not last:
            with self.wrapped.no_sync():
                yield
        elif mode == "fsdp":
            self.wrapped.set_requires_gradient_sync(last)
            yield
        else:
            yield

    def finish(self, player: str, params: list[nn.Parameter]) -> None:
        """After the backward passes of an update: the flat all_reduce where no wrapper did the work."""
        if self.mode(player) == "all_reduce":
            ddp.average_gradients(params, self.world)

    @contextlib.contextmanager
    def full(self, write_back: bool = False) -> Iterator[None]:
        """Inside, ``objective.players`` holds whole networks: with FSDP the sharded player is swapped for a
        full copy (weights and gradients) gathered from the shards (every rank must enter);
        ``write_back`` copies that copy's weights back into the shards on exit (loading a checkpoint).
        A no-op without FSDP."""
        if not self.fsdp:
            yield
            return
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            set_model_state_dict,
        )

        whole = StateDictOptions(full_state_dict=True)
        self.mirror.load_state_dict(get_model_state_dict(self.wrapped, options=whole))
        for mine, shard in zip(self.mirror.parameters(), self.wrapped.parameters()):  # and the gradients
            mine.grad = shard.grad.full_tensor() if shard.grad is not None else None
        players = self.objective.players
        players[self.player] = self.mirror
        try:
            yield
        finally:
            players[self.player] = self.wrapped
        if write_back:
            set_model_state_dict(self.wrapped, self.mirror.state_dict(), options=whole)

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """The optimiser's state as a 1-process run holds it (FSDP: gathered; every rank must call)."""
        if not self.fsdp:
            return optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(self.wrapped, optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        if not self.fsdp:
            optimizer.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(self.wrapped, optimizer, state,
                                 options=StateDictOptions(full_state_dict=True))

