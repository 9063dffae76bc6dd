"""Samples as a folder of PNGs, one per seed: ``DIR/{seed:06d}.png`` as EDM's ``generate.py`` writes them.

Class labels, when the samples have them, go to ``DIR/dataset.json`` in EDM's dataset layout
(``{"labels": [[name, label], ...]}``), so ``genzoo eval --samples DIR`` and any EDM tool read them back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from genzoo.io.atomic import CommitOnExit, atomic_folder
from genzoo.io.images import _as_nhwc_uint8


class PngFolderWriter(CommitOnExit):
    """Write each image as ``DIR/{seed:06d}.png`` as it arrives (same interface as ``NpzWriter``).

    The files go into a hidden temporary folder beside ``DIR`` that replaces ``DIR`` when the writer
    closes after success (:func:`genzoo.io.atomic.atomic_folder`: ``DIR`` must be new, empty or written by
    genzoo); a failed or interrupted run leaves ``DIR`` as it was."""

    def __init__(self, path: str | Path, flag: str = "--out"):
        self.path = Path(path)
        self._output = atomic_folder(self.path, flag)
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
            Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(self._output.tmp / name,
                                                                                   format="PNG")
            if labels is not None:
                self._labels.append([name, int(labels[i])])
        self.count += len(batch)

    def close(self, extra: Mapping[str, str] | None = None) -> Path:
        """Write ``dataset.json`` (and ``extra``: file name -> text) and put the folder in place."""
        try:
            if self._labels:
                (self._output.tmp / "dataset.json").write_text(json.dumps({"labels": self._labels}))
            for name, text in (extra or {}).items():
                (self._output.tmp / name).write_text(text)
            self._output.commit()
        except BaseException:
            self._output.discard()
            raise
        return self.path

    def discard(self) -> None:
        """Drop what was written; the folder keeps what it held before."""
        self._output.discard()



def open_sample_writer(path: str | Path):
    """``NpzWriter`` for ``*.npz``, else a :class:`PngFolderWriter` for the directory ``path``."""
    from genzoo.io.npz import NpzWriter

    return NpzWriter(path) if Path(path).suffix == ".npz" else PngFolderWriter(path)
