"""Datasets in every format users have, behind one call: :func:`load_dataset`.

Items are ``(image uint8 [C, H, W], label int)`` (-1 when unlabeled); datasets expose
``resolution``, ``num_channels``, ``num_classes``, ``class_names`` and ``captions`` (or None).
See docs/data.md for the spec table.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from genzoo.data.arrays import NpzDataset, load_cifar10, load_digits, load_mnist
from genzoo.data.base import ImageDataset, Spec, center_crop_arr, parse_spec
from genzoo.data.files import FolderDataset, ZipDataset
from genzoo.data.shapes import (
    COLOR_NAMES,
    COLOR_RGB,
    SHAPE_NAMES,
    ShapesDataset,
    class_name,
    classify_color,
)
from genzoo.errors import UserError

__all__ = ["COLOR_NAMES", "COLOR_RGB", "SHAPE_NAMES", "ImageDataset", "ShapesDataset", "center_crop_arr",
           "class_name", "classify_color", "infer_kind", "load_dataset", "parse_spec", "spec_kinds"]


def _load_shapes(spec: Spec, resolution: int | None, skip_bad: bool) -> ImageDataset:
    spec.check_options(["count", "seed"])
    res = resolution
    if spec.arg:
        try:
            res_from_spec = int(spec.arg)
        except ValueError:
            raise UserError(f"dataset spec {spec.text!r}: expected shapes:RES with an integer RES") from None
        if res is not None and res != res_from_spec:
            raise UserError(f"dataset spec {spec.text!r} says {res_from_spec} px but --resolution is {res}")
        res = res_from_spec
    res = res if res is not None else 32
    if res < 4:
        raise UserError(f"dataset spec {spec.text!r}: resolution must be at least 4, got {res}")
    count = spec.int_option("count", 50_000, minimum=1)
    return ShapesDataset(res, count=count, seed=spec.int_option("seed", 0))


_LOADERS: dict[str, tuple[Callable[[Spec, int | None, bool], ImageDataset], str]] = {
    "shapes": (_load_shapes, "shapes[:RES][?count=N&seed=S]"),
    "digits": (load_digits, "digits[:RES]"),
    "folder": (FolderDataset, "folder:PATH[?labels=auto|json|folder|prefix|none]"),
    "zip": (ZipDataset, "zip:PATH.zip"),
    "npz": (NpzDataset, "npz:PATH.npz"),
    "cifar10": (load_cifar10, "cifar10:PATH[?split=train|test]"),
    "mnist": (load_mnist, "mnist:PATH[?split=train|test]"),
}


def spec_kinds() -> list[str]:
    """Usage strings of every dataset spec kind."""
    return [usage for _, usage in _LOADERS.values()]


def infer_kind(path: str) -> str | None:
    """The spec kind of an existing path given without one (``data.zip`` -> ``zip``), or None."""
    p = Path(path)
    if p.is_dir():
        if any(p.rglob("data_batch_1")) or any(p.rglob("test_batch")):
            return "cifar10"
        if any("idx3-ubyte" in child.name for child in p.iterdir()):
            return "mnist"
        return "folder"
    if p.is_file():
        name = p.name.lower()
        if name.endswith(".zip"):
            return "zip"
        if name.endswith(".npz"):
            return "npz"
        if name.endswith((".tar.gz", ".tgz")):
            return "cifar10"
    return None


def load_dataset(spec: str, resolution: int | None = None, skip_bad: bool = False) -> ImageDataset:
    """The dataset named by ``spec`` (see docs/data.md), resized to ``resolution`` if given.

    An existing path without a kind is accepted too: a folder (or a CIFAR-10 / MNIST folder), a
    ``.zip``, an ``.npz``, or CIFAR-10's ``.tar.gz``.

    ``skip_bad`` skips unreadable image files (their count is in ``dataset.skipped``) instead of
    raising a :class:`~genzoo.errors.UserError` that names the first one.
    """
    parsed = parse_spec(spec)
    if parsed.kind not in _LOADERS:
        inferred = infer_kind(spec.rsplit("?", 1)[0])
        if inferred is not None:
            parsed = parse_spec(f"{inferred}:{spec}")
    if parsed.kind not in _LOADERS:
        if parsed.arg is None and ("/" in parsed.kind or "." in parsed.kind):
            raise UserError(f"dataset spec {spec!r}: no such file or directory (and not a spec kind; "
                            "expected one of: " + ", ".join(spec_kinds()) + ")")
        raise UserError(f"dataset spec {spec!r}: unknown kind {parsed.kind!r}; expected one of: "
                        + ", ".join(spec_kinds()))
    if resolution is not None and int(resolution) < 1:
        raise UserError(f"--resolution: expected a positive integer, got {resolution}")
    return _LOADERS[parsed.kind][0](parsed, None if resolution is None else int(resolution), skip_bad)
