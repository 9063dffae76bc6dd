"""Samples as a folder of PNGs, one per seed: ``DIR/{seed:06d}.png`` as EDM's ``generate.py`` writes them.

Class labels, when the samples have them, go to ``DIR/dataset.json`` in EDM's dataset layout
(``{"labels": [[name, label], ...]}``), so ``genzoo eval --samples DIR`` and any EDM tool read them back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from genzoo.errors import UserError
from genzoo.io.images import _as_nhwc_uint8


def _replace_from_temporary(path: Path, write) -> None:
    """Write ``path`` through a uniquely named temporary beside it, renamed into place on success."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class PngFolderWriter:
    """Write each image as ``DIR/{seed:06d}.png`` as it arrives (same interface as ``NpzWriter``)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"--out {self.path}: exists and is not a directory")
        self.path.mkdir(parents=True, exist_ok=True)
        self._labels: list[list] = []
        self.count = 0

    def write(self, images: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray | None = None,
              prompts: Sequence[str] | None = None, seeds: Sequence[int] | None = None) -> None:
        batch = _as_nhwc_uint8(images)
        if seeds is None or len(seeds) != len(batch):
            raise ValueError("a PNG folder needs one seed per image (the file names)")
        if labels is not None:
            labels = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        for i, (image, seed) in enumerate(zip(batch, seeds)):
            name = f"{int(seed):06d}.png"
            pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
            _replace_from_temporary(self.path / name, lambda tmp, pil=pil: pil.save(tmp, format="PNG"))
            if labels is not None:
                self._labels.append([name, int(labels[i])])
        self.count += len(batch)

    def close(self) -> Path:
        if self._labels:
            text = json.dumps({"labels": self._labels})
            _replace_from_temporary(self.path / "dataset.json", lambda tmp: tmp.write_text(text))
        return self.path

    def __enter__(self) -> PngFolderWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()


def open_sample_writer(path: str | Path):
    """``NpzWriter`` for ``*.npz``, else a :class:`PngFolderWriter` for the directory ``path``."""
    from genzoo.io.npz import NpzWriter

    return NpzWriter(path) if Path(path).suffix == ".npz" else PngFolderWriter(path)
