"""The one counter of network evaluations per image (NFE), for the samplers and for cost measurements.

Attach it one of two ways, with one count:

- **wrap**: ``counter = NFECounter(denoiser, images=n)`` and hand ``counter`` to the sampler in the
  denoiser's place (every other attribute is the wrapped one's); read ``counter.nfe`` afterwards.
- **hook**: ``NFECounter(module, hook=True)`` counts the forward calls of a module that code we do not
  wrap calls (a generator inside ``genzoo.sample``); :meth:`per_image` turns rows into NFE.

Each call records its batch rows; with ``images`` (the batch being sampled) a call counts the rows it
evaluates per image, so a classifier-free guided call on the doubled batch counts 2.
"""

from __future__ import annotations

from typing import Any

import torch


class NFECounter:
    """Counts evaluations of ``net``: ``calls``, ``rows`` (batch rows seen) and ``nfe`` (per image)."""

    def __init__(self, net: Any, images: int | None = None, hook: bool = False):
        self.net = net
        self.images = images
        self.calls = self.rows = self.nfe = 0
        self._handle = net.register_forward_pre_hook(self._on_forward) if hook else None

    def count(self, x: Any) -> None:
        """Record one evaluation of ``net`` on the batch ``x``."""
        rows = x.shape[0] if isinstance(x, torch.Tensor) and x.ndim > 0 else 0
        self.calls += 1
        self.rows += rows
        self.nfe += max(1, rows // self.images) if self.images else 1

    def per_image(self, images: int, batches: int) -> float | None:
        """NFE per image over ``batches`` batches that made ``images`` images in all: rows evaluated per
        image made (calls per batch when the calls' inputs have no batch rows); None if never called."""
        if not self.calls:
            return None
        return self.rows / images if self.rows else self.calls / batches

    def reset(self) -> None:
        self.calls = self.rows = self.nfe = 0

    def remove(self) -> None:
        """Detach a hooked counter from its module."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def __call__(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        self.count(x)
        return self.net(x, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["net"], name)

    def _on_forward(self, module: Any, args: tuple) -> None:
        self.count(args[0] if args else None)
