"""Reference statistics: the ADM reference-batch ``.npz`` layout, and streaming image sources.

An ADM reference batch (e.g. ``VIRTUAL_imagenet64_labeled.npz``) holds ``mu``/``sigma`` (pool_3,
2048) and ``mu_s``/``sigma_s`` (sFID, 2023) statistics plus ``arr_0``, uint8 NHWC reference images
for precision/recall. genzoo reads and writes that layout; it adds a ``features`` entry naming the
feature network when it is not Inception (files without it are Inception statistics, as ADM's are).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genzoo.errors import UserError


@dataclass
class Reference:
    """Statistics (and optionally images) of a reference set in one feature space."""

    features: str = "inception"
    mu: np.ndarray | None = None
    sigma: np.ndarray | None = None
    mu_s: np.ndarray | None = None
    sigma_s: np.ndarray | None = None
    images: np.ndarray | None = None     # uint8 NHWC, for precision/recall and KID
    source: str = ""


def save_reference(path: str | Path, ref: Reference) -> Path:
    """Write ``ref`` in the ADM reference-batch layout (entries that are None are left out)."""
    path = Path(path)
    if path.suffix != ".npz":
        raise UserError(f"{path}: a reference batch file must end in .npz")
    entries = {k: getattr(ref, k) for k in ("mu", "sigma", "mu_s", "sigma_s") if getattr(ref, k) is not None}
    if ref.images is not None:
        entries["arr_0"] = ref.images
    if ref.features != "inception":
        entries["features"] = np.array(ref.features)
    from genzoo.io.atomic import atomic_output

    with atomic_output(path, "--save-ref") as tmp:
        np.savez(tmp, **entries)
    return path


def load_reference(path: str | Path) -> Reference:
    """Read an ADM reference batch (or any ``.npz`` with ``arr_0`` images) without unpickling."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--ref {path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = set(data.files)
            features = str(data["features"]) if "features" in keys else "inception"
            ref = Reference(features=features, source=str(path))
            for key in ("mu", "sigma", "mu_s", "sigma_s"):
                if key in keys:
                    setattr(ref, key, data[key].astype(np.float64))
            if "arr_0" in keys:
                ref.images = data["arr_0"]
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise UserError(f"--ref {path}: not a readable .npz file ({err})") from None
    if ref.mu is None and ref.images is None:
        raise UserError(f"--ref {path}: expected an ADM reference batch (mu, sigma[, mu_s, sigma_s, arr_0]) "
                        f"or images in arr_0; found {', '.join(sorted(keys)) or 'nothing'}")
    if (ref.mu is None) != (ref.sigma is None) or (
            ref.mu is not None and ref.sigma.shape != (len(ref.mu),) * 2):
        raise UserError(f"--ref {path}: 'mu' and 'sigma' must both be present with shapes [D] and [D, D]")
    if ref.images is not None and (ref.images.dtype != np.uint8 or ref.images.ndim != 4):
        raise UserError(f"--ref {path}: 'arr_0' must be uint8 [N, H, W, C], got {ref.images.dtype} "
                        f"{ref.images.shape}")
    return ref


def iter_npz_images(path: str | Path, batch_size: int = 256,
                    limit: int | None = None) -> Iterator[np.ndarray]:
    """Yield ``arr_0`` of an ``.npz`` in uint8 NHWC batches, reading only one batch at a time.

    Works for stored and compressed archives (the member is read as a stream), so the memory used
    does not grow with the number of images.
    """
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as err:
        raise UserError(f"{path}: not a readable .npz file ({err})") from None
    with archive:
        if "arr_0.npy" not in archive.namelist():
            raise UserError(f"{path}: expected an ADM sample file with 'arr_0' (uint8 NHWC images)")
        with archive.open("arr_0.npy") as stream:
            shape, fortran, dtype = _npy_header(stream)
            if dtype != np.uint8 or len(shape) != 4 or fortran:
                raise UserError(f"{path}: 'arr_0' must be C-ordered uint8 [N, H, W, C], got {dtype} {shape}")
            per_image = int(np.prod(shape[1:]))
            total = shape[0] if limit is None else min(shape[0], limit)
            done = 0
            while done < total:
                n = min(batch_size, total - done)
                raw = stream.read(n * per_image)
                if len(raw) != n * per_image:
                    raise UserError(f"{path}: 'arr_0' is truncated after {done} images")
                yield np.frombuffer(bytearray(raw), dtype=np.uint8).reshape(n, *shape[1:])
                done += n


def npz_labels(path: str | Path) -> np.ndarray | None:
    """``arr_1`` (requested labels) of a sample file, or None; reads only that member."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return data["arr_1"].astype(np.int64).reshape(-1) if "arr_1" in data.files else None
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise UserError(f"{path}: not a readable .npz file ({err})") from None


def npz_prompts(path: str | Path) -> list[str] | None:
    """``prompts`` (the text each image was sampled with) of a sample file, or None."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return [str(p) for p in data["prompts"]] if "prompts" in data.files else None
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise UserError(f"{path}: not a readable .npz file ({err})") from None


def npz_image_count(path: str | Path) -> tuple[int, tuple[int, ...]]:
    """(number of images, image shape HWC) of an ``.npz`` sample file, from its header only."""
    with zipfile.ZipFile(path) as archive, archive.open("arr_0.npy") as stream:
        shape, _, _ = _npy_header(stream)
    return shape[0], tuple(shape[1:])


def _npy_header(stream) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(stream)
    return np.lib.format.read_array_header_2_0(stream)


def iter_dataset_images(dataset, batch_size: int = 256, limit: int | None = None
                        ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (uint8 NHWC images, labels) batches of a genzoo dataset (``genzoo.data.load_dataset``)."""
    total = len(dataset) if limit is None else min(len(dataset), limit)
    for start in range(0, total, batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, total))]
        images = np.stack([np.asarray(image).transpose(1, 2, 0) for image, _ in items])
        yield images, np.array([label for _, label in items], dtype=np.int64)


@dataclass
class LazyBatch:
    """Items ``[start, stop)`` of a genzoo dataset, decoded only by the process that works on them."""

    dataset: Any
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start

    def split(self, size: int) -> Iterator[LazyBatch]:
        for start in range(self.start, self.stop, size):
            yield LazyBatch(self.dataset, start, min(start + size, self.stop))

    def load(self) -> np.ndarray:
        """uint8 NHWC images."""
        return np.stack([np.asarray(self.dataset.image(i)) for i in range(self.start, self.stop)])


def iter_dataset_batches(dataset, batch_size: int = 256, limit: int | None = None) -> Iterator[LazyBatch]:
    """The items of a genzoo dataset as :class:`LazyBatch` es (nothing is decoded here)."""
    total = len(dataset) if limit is None else min(len(dataset), limit)
    yield from LazyBatch(dataset, 0, total).split(batch_size)
