"""ADM's sample-file layout: ``.npz`` with ``arr_0`` uint8 NHWC images and ``arr_1`` int64 labels.

:class:`NpzWriter` streams images to disk batch by batch, so no more than one batch is held in
memory; the file is written to a uniquely named temporary beside it and renamed into place when
closed after success (:mod:`genzoo.io.atomic`), so a failed or interrupted writer leaves what was there.
"""

from __future__ import annotations

import os
import struct
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from genzoo.errors import UserError
from genzoo.io.atomic import CommitOnExit, atomic_output
from genzoo.io.images import _as_nhwc_uint8


def _npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    """A version-1.0 ``.npy`` header for a C-ordered array (NumPy format spec)."""
    descr = np.lib.format.dtype_to_descr(np.dtype(dtype))
    text = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {tuple(shape)!r}, }}"
    # Total header length (magic 6 + version 2 + length 2 + text + newline) is a multiple of 64.
    padding = 64 - (10 + len(text) + 1) % 64
    text = text + " " * padding + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")


def _member(name: str) -> zipfile.ZipInfo:
    """A zip entry with a fixed timestamp, so the same images always give the same bytes."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    return info


class NpzWriter(CommitOnExit):
    """Write ``arr_0`` (uint8 NHWC) and ``arr_1`` (labels) incrementally into an ``.npz`` file, plus
    ``prompts`` (a unicode array, one per image) for text-conditional samples.

    The image count is not known in advance, so each array is written to a temporary raw file and
    copied into the zip with its header when the writer closes.
    """

    def __init__(self, path: str | Path, flag: str = "--out"):
        self.path = Path(path)
        if self.path.suffix != ".npz":
            raise UserError(f"{flag} {self.path}: expected a file name ending in .npz")
        self._output = atomic_output(self.path, flag)
        fd, name = tempfile.mkstemp(prefix=self._output.tmp.name[:-len(".tmp.npz")] + ".",
                                    suffix=".tmp-images", dir=self.path.parent)
        self._tmp_images = Path(name)
        self._images = os.fdopen(fd, "wb")
        self._labels: list[np.ndarray] = []
        self._prompts: list[str] = []
        self._shape: tuple[int, int, int] | None = None
        self.count = 0

    def write(
        self, images: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray | None = None,
        prompts: Sequence[str] | None = None, seeds: Sequence[int] | None = None,
    ) -> None:
        """Append a batch: float NCHW in [-1,1] / uint8 NCHW tensors, or uint8 NHWC arrays (``seeds``
        is accepted for the PNG folder writer's interface; the ``.npz`` layout keeps order only)."""
        batch = _as_nhwc_uint8(images)
        if self._shape is None:
            self._shape = batch.shape[1:]
        elif batch.shape[1:] != self._shape:
            raise ValueError(f"image shape {batch.shape[1:]} differs from earlier {self._shape}")
        self._images.write(np.ascontiguousarray(batch).tobytes())
        if labels is not None:
            labels = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
            self._labels.append(labels.astype(np.int64).reshape(-1))
        if prompts is not None:
            self._prompts.extend(str(p) for p in prompts)
        self.count += len(batch)

    def close(self) -> Path:
        """Finish the file and rename it into place."""
        self._images.close()
        try:
            self._check_counts()
            self._write_zip(self._output.tmp)
            self._output.commit()
        except BaseException:
            self._output.discard()
            raise
        finally:
            self._tmp_images.unlink(missing_ok=True)
        return self.path

    def discard(self) -> None:
        """Drop what was written; the target keeps what it held before."""
        self._images.close()
        self._tmp_images.unlink(missing_ok=True)
        self._output.discard()

    def _check_counts(self) -> None:
        labels = sum(len(batch) for batch in self._labels)
        if self._labels and labels != self.count:
            raise ValueError(f"{labels} labels for {self.count} images")
        if self._prompts and len(self._prompts) != self.count:
            raise ValueError(f"{len(self._prompts)} prompts for {self.count} images")

    def _write_zip(self, tmp_zip: Path) -> None:
        shape = (self.count, *(self._shape or (0, 0, 3)))
        with zipfile.ZipFile(tmp_zip, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            with archive.open(_member("arr_0.npy"), "w", force_zip64=True) as out, \
                    open(self._tmp_images, "rb") as src:
                out.write(_npy_header(shape, np.uint8))
                while chunk := src.read(1 << 20):
                    out.write(chunk)
            if self._labels:
                with archive.open(_member("arr_1.npy"), "w") as out:
                    np.lib.format.write_array(out, np.concatenate(self._labels))
            if self._prompts:
                with archive.open(_member("prompts.npy"), "w") as out:
                    np.lib.format.write_array(out, np.array(self._prompts, dtype=str))



def read_npz_images(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read an ADM sample file: (``arr_0`` uint8 NHWC, ``arr_1`` labels or None)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such .npz file")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "arr_0" not in data:
                raise UserError(f"{path}: expected an ADM sample file with 'arr_0' (uint8 NHWC)")
            images = data["arr_0"]
            labels = data["arr_1"] if "arr_1" in data else None
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise UserError(f"{path}: not a readable .npz file ({err})") from None
    if images.dtype != np.uint8 or images.ndim != 4:
        raise UserError(f"{path}: 'arr_0' must be uint8 [N, H, W, C], got {images.dtype} {images.shape}")
    return images, labels
