"""Data-parallel training over processes started by ``torchrun`` (gloo on CPU, NCCL on CUDA).

The engine does not wrap networks in ``DistributedDataParallel``: objectives call their networks
freely (a GAN's D loss runs G, a consistency loss runs a target network), and after the backward
passes of an update the engine averages the player's gradients over ranks with one ``all_reduce``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

from genzoo.errors import UserError


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this process group was created by the engine (destroy it at the end)

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(spec: str | None, local_rank: int = 0) -> torch.device:
    """``auto`` is ``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``."""
    if spec in (None, "", "auto"):
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UserError(f"--device: not a torch device: {spec!r} (expected cpu, cuda, cuda:N or auto)") \
            from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {spec}: CUDA is not available on this machine")
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


def init_from_env(device: torch.device) -> Distributed:
    """Join the process group described by torchrun's environment (``WORLD_SIZE``, ``RANK``, ...)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        return Distributed(dist.get_rank(), dist.get_world_size(), local_rank, owns_group=False)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    return Distributed(dist.get_rank(), dist.get_world_size(), local_rank, owns_group=True)


def average_gradients(params: Iterable[nn.Parameter], world: int) -> None:
    """Replace each gradient by its mean over ranks (one flat all_reduce; a missing one counts as 0)."""
    params = [p for p in params if p.requires_grad]
    if world <= 1 or not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    used = torch.tensor([float(p.grad is not None) for p in params], device=grads[0].device)
    flat = torch.cat([g.reshape(-1).float() for g in grads] + [used])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    used = flat[-len(params):].tolist()
    flat = flat[:-len(params)] / world
    offset = 0
    for i, (p, g) in enumerate(zip(params, grads)):
        n = g.numel()
        if used[i] > 0:  # a parameter no rank used keeps no gradient, as in a 1-process run
            p.grad = flat[offset:offset + n].view_as(g).to(g.dtype).contiguous(memory_format=_format_of(p))
        offset += n


def _format_of(p: torch.Tensor) -> torch.memory_format:
    if p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def mean_over_ranks(values: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= world
    return values


def any_rank(flag: bool, world: int, device: torch.device) -> bool:
    """True on every rank if ``flag`` is true on any (e.g. rank 0's wall clock says stop)."""
    if world <= 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_module(module: nn.Module, world: int) -> None:
    """Give every rank rank 0's parameters and buffers."""
    if world <= 1:
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=0)


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()
