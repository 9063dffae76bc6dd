"""Processes started by ``torchrun`` (gloo on CPU, NCCL on CUDA): data-parallel training, and the
sharded map that ``sample`` and ``eval`` use (each rank works on its share, rank 0 receives every
result in the order of a 1-process run).

Which gradients are averaged how (DistributedDataParallel, FSDP, or the flat ``all_reduce`` of
:func:`average_gradients` for objectives with several players per step) is :mod:`genzoo.train.parallel`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

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

    @classmethod
    def current(cls) -> Distributed:
        """The process group this process has joined (a 1-process one when none, or inside
        :func:`local_only`)."""
        if not _local_depth and dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
        return cls()


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


_local_depth = 0


@contextlib.contextmanager
def local_only() -> Iterator[None]:
    """Work that every rank does whole (e.g. a search over sampling settings): no sharding inside."""
    global _local_depth
    _local_depth += 1
    try:
        yield
    finally:
        _local_depth -= 1


@contextlib.contextmanager
def process_group(device_spec: str | None) -> Iterator[tuple[torch.device, Distributed]]:
    """``(device, group)`` for a command: ``--device`` resolved for this rank (``auto``: CUDA when
    available) and torchrun's process group joined; the group is left on exit."""
    device = pick_device(device_spec, int(os.environ.get("LOCAL_RANK", "0")))
    group = init_from_env(device)
    try:
        yield device, group
    finally:
        if group.owns_group and dist.is_initialized():
            dist.destroy_process_group()


T = TypeVar("T")
R = TypeVar("R")


def map_in_order(items: Iterable[T], work: Callable[[T], R], group: Distributed | None = None
                 ) -> Iterator[tuple[T, R | None]]:
    """Apply ``work`` to this rank's share of ``items`` (item i goes to rank i mod world).

    Every rank walks all items (so they must be cheap: seed lists, file names, stream chunks). Rank 0
    yields ``(item, result)`` for every item in order, as a 1-process run would; the other ranks yield
    ``(item, None)`` for every item, so they can count progress but keep no results.
    """
    group = group or Distributed.current()
    if not group.active:
        for item in items:
            yield item, work(item)
        return
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, group.world)):
        mine = work(chunk[group.rank]) if group.rank < len(chunk) else None
        gathered: list[Any] | None = [None] * group.world if group.is_main else None
        dist.gather_object(mine, gathered, dst=0)
        for i, item in enumerate(chunk):
            yield item, (gathered[i] if gathered is not None else None)
