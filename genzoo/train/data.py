"""The order in which training images are drawn: resumable, and the same for any number of processes.

The global stream of dataset indices is one seeded permutation per epoch, concatenated. A training
update takes the next ``batch`` (global) indices; within them, accumulation round ``a`` of rank ``r``
takes the slice ``[(a * world + r) * per_device, ... + per_device)``. The position in the stream is
the only state, so saving it (``state.json``) resumes the order exactly, and the items of a global
batch are the same whether one process takes them or many.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from genzoo.io.images import from_uint8
from genzoo.train.objective import Batch


def epoch_permutation(seed: int, epoch: int, size: int) -> torch.Tensor:
    """The dataset order of one epoch: a permutation depending on (seed, epoch) only."""
    gen = torch.Generator().manual_seed(mix_seed(seed, 0x5EED, epoch))
    return torch.randperm(size, generator=gen)


class MicroBatchIndices:
    """The dataset indices of this rank's micro-batches, update after update, from ``position``.

    Iterating yields lists of ``per_device`` indices: ``rounds`` of them per update. Used as a
    ``batch_sampler`` of a ``DataLoader``, so loader workers prefetch in the same order.
    """

    def __init__(self, seed: int, size: int, batch: int, per_device: int, rank: int, world: int,
                 position: int):
        self.seed, self.size, self.batch = seed, size, batch
        self.per_device, self.rank, self.world = per_device, rank, world
        self.rounds = batch // (per_device * world)
        self.position = position

    def __iter__(self) -> Iterator[list[int]]:
        position = self.position
        cache: dict[int, torch.Tensor] = {}
        while True:
            for a in range(self.rounds):
                first = position + (a * self.world + self.rank) * self.per_device
                yield self._take(first, cache)
            position += self.batch

    def _take(self, first: int, cache: dict[int, torch.Tensor]) -> list[int]:
        out = []
        for position in range(first, first + self.per_device):
            epoch, offset = divmod(position, self.size)
            if epoch not in cache:
                cache.clear()
                cache[epoch] = epoch_permutation(self.seed, epoch, self.size)
            out.append(int(cache[epoch][offset]))
        return out


def mix_seed(*values: int) -> int:
    """A 63-bit seed from several integers (splitmix64 finaliser over the sequence)."""
    h = 0x9E3779B97F4A7C15
    mask = (1 << 64) - 1
    for v in values:
        h = (h ^ (int(v) & mask)) & mask
        h = (h * 0xBF58476D1CE4E5B9) & mask
        h ^= h >> 31
        h = (h * 0x94D049BB133111EB) & mask
        h ^= h >> 29
    return h & ((1 << 63) - 1)


class IndexedDataset(torch.utils.data.Dataset):
    """``dataset[i]`` (``(uint8 [C, H, W], label)``) with ``i`` appended, so batches know their indices."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, Any, int]:
        item = self.dataset[index]
        return item[0], item[1], index


def collate(items: Sequence[tuple[Any, Any, int]]) -> dict[str, torch.Tensor]:
    """Stack ``(image, label, index)`` items; a missing label becomes -1."""
    images = torch.stack([torch.as_tensor(item[0]) for item in items])
    labels = torch.tensor([int(item[1]) if item[1] is not None else -1 for item in items], dtype=torch.int64)
    indices = torch.tensor([item[2] for item in items], dtype=torch.int64)
    return {"images": images, "labels": labels, "indices": indices}


def to_batch(raw: dict[str, torch.Tensor], captions: Sequence[str] | None, device: torch.device,
             channels_last: bool = False, rng: Any = None) -> Batch:
    """The objective's view of a collated micro-batch: float images in [-1, 1] on ``device``."""
    images = raw["images"].to(device, non_blocking=True)
    if images.dtype == torch.uint8:
        images = from_uint8(images)
    else:
        images = images.to(torch.float32)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    indices = raw["indices"]
    return Batch(images=images, labels=raw["labels"].to(device, non_blocking=True),
                 captions=[captions[i] for i in indices.tolist()] if captions is not None else None,
                 indices=indices.to(device), rng=rng)
