"""Write any dataset as an EDM/StyleGAN zip (``.zip``) or an ADM sample file (``.npz``), streaming.

The zip holds ``{idx // 1000:05d}/img{idx:08d}.png`` files plus ``dataset.json`` with
``{"labels": [[name, label], ...] | null}`` (EDM's dataset-tool layout); genzoo also stores
``class_names`` and ``captions`` there when the dataset has them (EDM ignores extra keys). PNG is
lossless, so loading an export gives back exactly the pixels and labels exported.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from genzoo.data.base import ImageDataset
from genzoo.errors import UserError
from genzoo.io import NpzWriter, atomic_output, check_output_file


def iterate_batches(dataset: ImageDataset, batch_size: int = 256, limit: int | None = None,
                    workers: int = 0) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """(indices, uint8 NCHW images, int64 labels) in dataset order, decoded by ``workers`` processes."""
    count = len(dataset) if limit is None else min(limit, len(dataset))
    subset = torch.utils.data.Subset(dataset, range(count))
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=workers)
    start = 0
    for images, labels in loader:
        yield np.arange(start, start + len(images)), images, labels.to(torch.int64)
        start += len(images)


def edm_archive_name(index: int) -> str:
    """EDM's dataset-tool file name of image ``index``."""
    text = f"{index:08d}"
    return f"{text[:5]}/img{text}.png"


def _png_bytes(image_chw: torch.Tensor) -> bytes:
    array = image_chw.numpy().transpose(1, 2, 0)
    pil = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def export_dataset(dataset: ImageDataset, out: str | Path, *, batch_size: int = 256, limit: int | None = None,
                   workers: int = 0, on_progress: Callable[[int], None] | None = None) -> int:
    """Write ``dataset`` (its first ``limit`` items) to ``out`` (.zip or .npz); returns the item count.

    The file appears whole or not at all; a dataset that ``genzoo data info`` would refuse to read back
    (no images, labels outside [0, classes)) is refused before anything is written."""
    out = check_output_file(out, "OUT")
    suffix = out.suffix.lower()
    if suffix not in (".zip", ".npz"):
        raise UserError(f"OUT {out}: expected an output name ending in .zip (EDM) or .npz (ADM)")
    if (len(dataset) if limit is None else min(limit, len(dataset))) == 0:
        raise UserError(f"OUT {out}: the dataset holds no images; nothing to export")
    labeled = dataset.num_classes > 0
    batches = _checked_labels(iterate_batches(dataset, batch_size, limit, workers), dataset.num_classes)
    if suffix == ".npz":
        count = 0
        with NpzWriter(out, "OUT") as writer:
            for _, images, labels in batches:
                writer.write(images.numpy().transpose(0, 2, 3, 1), labels.numpy() if labeled else None)
                count += len(images)
                if on_progress:
                    on_progress(count)
        return count
    labels_json, captions_json = [], []
    captions = dataset.captions
    with atomic_output(out, "OUT") as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            for indices, images, labels in batches:
                for index, image, label in zip(indices.tolist(), images, labels.tolist()):
                    name = edm_archive_name(index)
                    archive.writestr(name, _png_bytes(image))
                    labels_json.append([name, int(label)])
                    if captions is not None:
                        captions_json.append([name, str(captions[index])])
                if on_progress:
                    on_progress(len(labels_json))
            meta: dict = {"labels": labels_json if labeled else None}
            if labeled and dataset.class_names:
                meta["class_names"] = list(dataset.class_names)
            if captions is not None:
                meta["captions"] = captions_json
            archive.writestr("dataset.json", json.dumps(meta))
    return len(labels_json)


def _checked_labels(batches: Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]], num_classes: int
                    ) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """Stop with a UserError at an item whose label is outside [0, num_classes) (labeled data only)."""
    for indices, images, labels in batches:
        if num_classes > 0:
            bad = ((labels < 0) | (labels >= num_classes)).nonzero()
            if len(bad):
                i = int(bad[0, 0])
                raise UserError(f"item {int(indices[i])}: label {int(labels[i])} is outside "
                                f"[0, {num_classes}); nothing was exported")
        yield indices, images, labels
