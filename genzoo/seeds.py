"""Seeds: parsing `--seeds` lists and per-seed random streams.

The noise for seed ``s`` comes from a generator seeded with ``s`` alone, so an image depends on its
seed and never on the batch size or the number of processes.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import torch

from genzoo.errors import UserError


def parse_seeds(text: str | int | Sequence[int]) -> list[int]:
    """Parse ``"0-99,200,300-310"`` (ranges inclusive, as EDM's ``--seeds``) into a list of ints."""
    if isinstance(text, int):
        return [text]
    if not isinstance(text, str):
        return [int(s) for s in text]
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-", 1))
                if hi < lo:
                    raise UserError(f"--seeds: range {part!r} ends before it starts")
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise UserError(f"--seeds: expected a list like '0-99,200,300-310', got {text!r}") from None
    if not seeds:
        raise UserError(f"--seeds: no seeds in {text!r}")
    return seeds


def seeds_text(text: str) -> str:
    """argparse ``type=``: check a seed list at parse time (one line naming the problem); keep the text."""
    import argparse

    try:
        parse_seeds(text)
    except UserError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("--seeds: ")) from None
    return text


class StackedRandomGenerator:
    """One ``torch.Generator`` per seed; every draw is made per seed and stacked along dim 0.

    ``randn``, ``randn_like`` and ``randint`` therefore give seed ``s`` the same numbers whatever
    batch it is drawn in.
    """

    def __init__(self, device: torch.device | str, seeds: Sequence[int]):
        self.device = torch.device(device)
        self.seeds = list(seeds)
        self.generators = []
        for seed in self.seeds:
            gen = torch.Generator(self.device)
            gen.manual_seed(int(seed) % (1 << 63))
            self.generators.append(gen)

    def __len__(self) -> int:
        return len(self.generators)

    def randn(self, size: Sequence[int], dtype: torch.dtype = torch.float32, **kwargs) -> torch.Tensor:
        """Standard normal draws of shape ``[len(seeds), *size[1:]]``; ``size[0]`` must equal len(seeds)."""
        self._check_batch(size)
        return torch.stack([torch.randn(tuple(size[1:]), generator=g, device=self.device, dtype=dtype)
                            for g in self.generators])

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        return self.randn(x.shape, dtype=x.dtype)

    def rand(self, size: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        self._check_batch(size)
        return torch.stack([torch.rand(tuple(size[1:]), generator=g, device=self.device, dtype=dtype)
                            for g in self.generators])

    def randint(self, low: int, high: int, size: Sequence[int]) -> torch.Tensor:
        self._check_batch(size)
        return torch.stack([torch.randint(low, high, tuple(size[1:]), generator=g, device=self.device)
                            for g in self.generators])

    def _check_batch(self, size: Sequence[int]) -> None:
        if len(size) == 0 or int(size[0]) != len(self.generators):
            raise ValueError(f"first dimension {tuple(size)} must equal the number of seeds {len(self)}")


def batches(seeds: Sequence[int], batch_size: int, rank: int = 0, world_size: int = 1) -> list[list[int]]:
    """Split seeds into batches of at most ``batch_size``, this rank's share of them (round robin)."""
    if batch_size < 1:
        raise UserError(f"--batch: expected a positive batch size, got {batch_size}")
    seeds = list(seeds)
    all_batches = [seeds[i:i + batch_size] for i in range(0, len(seeds), batch_size)]
    return all_batches[rank::world_size]


def _is_class(value: Any, num_classes: int) -> bool:
    integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    return integral and 0 <= int(value) < num_classes


def labels_for_seeds(seeds: list[int], class_labels: int | Sequence[int] | None,
                      num_classes: int) -> list[int] | None:
    """One label per seed: given (one for all or one per seed, each in [0, num_classes)) or drawn."""
    if num_classes <= 0:
        if class_labels is not None:
            raise UserError("--class: this model is unconditional (no classes); drop --class")
        return None
    if class_labels is not None:
        given = [class_labels] if isinstance(class_labels, int) else list(class_labels)
        bad = next((c for c in given if not _is_class(c, num_classes)), None)
        if bad is not None:
            raise UserError(f"--class {bad}: expected a class in [0, {num_classes - 1}] for this model")
        if len(given) not in (1, len(seeds)):
            raise UserError(f"--class: {len(given)} labels for {len(seeds)} seeds; give one for all or "
                            "one per seed")
    if class_labels is None:
        # A class drawn from the seed alone, so it too is independent of batching.
        return [int(torch.randint(num_classes, (1,), generator=torch.Generator().manual_seed(s + (1 << 32))))
                for s in seeds]
    if isinstance(class_labels, int):
        return [class_labels] * len(seeds)
    class_labels = list(class_labels)
    if len(class_labels) == 1:
        return class_labels * len(seeds)
    return class_labels


# Draws from a per-sample generator when one is given (training steps, sampling), else from torch's
# global generator: the one "rng, else torch" rule.

def uniform(rng: Any, shape: Sequence[int], device: torch.device | str) -> torch.Tensor:
    """U[0, 1) of ``shape`` on ``device``."""
    return rng.rand(list(shape)).to(device) if rng is not None else torch.rand(*shape, device=device)


def normal(rng: Any, shape: Sequence[int], device: torch.device | str) -> torch.Tensor:
    """N(0, 1) of ``shape`` on ``device``."""
    return rng.randn(list(shape)).to(device) if rng is not None else torch.randn(*shape, device=device)


def normal_like(rng: Any, x: torch.Tensor) -> torch.Tensor:
    """N(0, 1) shaped like ``x``, on its device."""
    return rng.randn_like(x).to(x.device) if rng is not None else torch.randn_like(x)


def integers(rng: Any, low: int, high: int, n: int, device: torch.device | str) -> torch.Tensor:
    """``n`` integers uniform in [low, high) on ``device``."""
    return rng.randint(low, high, [n]).to(device) if rng is not None else torch.randint(low, high, (n,),
                                                                                        device=device)


def global_rng_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The global CPU (and ``device``'s CUDA) generator state, to replay the same dropout masks."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def set_global_rng_state(state: tuple[torch.Tensor, torch.Tensor | None], device: torch.device) -> None:
    """Restore a :func:`global_rng_state`."""
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)
