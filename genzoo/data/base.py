"""The dataset contract shared by every format, spec parsing, and ADM-style resizing.

Every dataset is a torch ``Dataset`` whose items are ``(image, label)``: ``image`` a uint8 tensor
``[C, H, W]``, ``label`` an ``int`` (-1 when the item has no label). It exposes ``resolution``,
``num_channels``, ``num_classes`` (0 when unlabeled), ``captions`` (one string per item, or None)
and ``class_names`` (or None).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import numpy as np
import torch
from PIL import Image

from genzoo.errors import UserError


@dataclass
class Spec:
    """A parsed dataset spec ``KIND[:ARG][?key=value&...]``."""

    text: str
    kind: str
    arg: str | None
    options: dict[str, str] = field(default_factory=dict)

    def option(self, key: str, choices: Sequence[str] | None = None,
               default: str | None = None) -> str | None:
        value = self.options.get(key, default)
        if value is not None and choices is not None and value not in choices:
            raise UserError(f"dataset spec {self.text!r}: ?{key}= must be one of {', '.join(choices)}, "
                            f"got {value!r}")
        return value

    def int_option(self, key: str, default: int | None = None, minimum: int = 0) -> int | None:
        value = self.options.get(key)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            number = minimum - 1
        if number < minimum:
            raise UserError(f"dataset spec {self.text!r}: ?{key}= expects an integer >= {minimum}, "
                            f"got {value!r}")
        return number

    def check_options(self, allowed: Sequence[str]) -> None:
        unknown = sorted(set(self.options) - set(allowed))
        if unknown:
            allowed_text = ", ".join(allowed) if allowed else "none"
            raise UserError(f"dataset spec {self.text!r}: unknown option(s) {', '.join(unknown)} "
                            f"(allowed: {allowed_text})")


def parse_spec(text: str) -> Spec:
    """Split ``"folder:/data/x?labels=prefix"`` into kind ``folder``, arg ``/data/x``, options."""
    if not isinstance(text, str) or not text.strip():
        raise UserError(f"dataset spec: expected a string like 'shapes' or 'folder:PATH', got {text!r}")
    body, options = text, {}
    if "?" in text:
        body, query = text.rsplit("?", 1)
        options = dict(parse_qsl(query, keep_blank_values=True))
    kind, sep, arg = body.partition(":")
    return Spec(text=text, kind=kind.strip().lower(), arg=arg if sep else None, options=options)


class ImageDataset(torch.utils.data.Dataset):
    """Base class: subclasses set the attributes below and implement ``__len__`` and ``image(i)``."""

    resolution: int
    num_channels: int
    num_classes: int = 0
    class_names: list[str] | None = None
    captions: Sequence[str] | None = None
    description: str = ""

    def __len__(self) -> int:
        raise NotImplementedError

    def image(self, index: int) -> np.ndarray:
        """The uint8 HWC array of item ``index`` at the dataset's resolution and channel count."""
        raise NotImplementedError

    def label(self, index: int) -> int:
        labels = getattr(self, "labels", None)
        return -1 if labels is None else int(labels[index])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        index = self._check_index(index)
        array = self.image(index)
        return torch.from_numpy(array.transpose(2, 0, 1).copy()), self.label(index)

    def _check_index(self, index: int) -> int:
        n = len(self)
        index = int(index)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} items")
        return index

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.description or ''} items={len(self)} "
                f"resolution={self.resolution} channels={self.num_channels} classes={self.num_classes})")


def center_crop_arr(pil_image: Image.Image, image_size: int) -> np.ndarray:
    """Resize so the short side is ``image_size``, then centre-crop a square (ADM's semantics).

    While the short side is at least twice too large, halve the image with a box filter; then one
    bicubic resize to the target short side (no-op when already there); then crop the centre.
    """
    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
    scale = image_size / min(*pil_image.size)
    pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC)
    array = np.asarray(pil_image)
    top = (array.shape[0] - image_size) // 2
    left = (array.shape[1] - image_size) // 2
    return array[top:top + image_size, left:left + image_size]


def to_channels(pil_image: Image.Image, channels: int) -> Image.Image:
    """Convert to ``L`` (1 channel) or ``RGB`` (3 channels).

    Grayscale goes to RGB by repeating the channel; RGB goes to grayscale with ITU-R 601 luma
    (PIL's ``L``); an alpha channel is dropped (ADM's ``convert("RGB")``), not composited.
    """
    mode = "L" if channels == 1 else "RGB"
    if pil_image.mode == mode:
        return pil_image
    if pil_image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16-bit grayscale is scaled into 8 bits (v / 257, so 65535 -> 255) instead of PIL's
        # clipping; 32-bit integer and float images are taken as 0..255 values and clipped.
        array = np.asarray(pil_image, dtype=np.float64)
        if pil_image.mode.startswith("I;16"):
            array = array / 257.0
        pil_image = Image.fromarray(np.clip(np.round(array), 0, 255).astype(np.uint8), "L")
    elif pil_image.mode in ("LA", "PA", "RGBA", "P", "1", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "La"):
        pil_image = pil_image.convert("RGB" if pil_image.mode not in ("LA", "La", "1") else "L")
    return pil_image.convert(mode)


def resize_array(array: np.ndarray, resolution: int) -> np.ndarray:
    """Apply :func:`center_crop_arr` to a uint8 HWC array (no-op when it is already square at size)."""
    h, w, c = array.shape
    if h == resolution and w == resolution:
        return array
    pil = Image.fromarray(array[..., 0] if c == 1 else array)
    out = center_crop_arr(pil, resolution)
    return out[..., None] if out.ndim == 2 else out


def convert_array(array: np.ndarray, channels: int) -> np.ndarray:
    """Convert a uint8 HWC array with 1, 3 or 4 channels to ``channels`` (see :func:`to_channels`)."""
    if array.shape[2] == channels:
        return array
    src = array[..., 0] if array.shape[2] == 1 else array
    pil = to_channels(Image.fromarray(src), channels)
    out = np.asarray(pil)
    return out[..., None] if out.ndim == 2 else out


class ArrayDataset(ImageDataset):
    """Images held as one uint8 NHWC array (or a memory map), resized lazily per item if needed."""

    def __init__(self, images: np.ndarray, labels: np.ndarray | None, *, resolution: int | None,
                 channels: int | None = None, num_classes: int | None = None,
                 class_names: list[str] | None = None, captions: Sequence[str] | None = None,
                 description: str = "", source: str = "images"):
        if images.ndim != 4 or images.dtype != np.uint8 or images.shape[3] not in (1, 3, 4):
            raise UserError(f"{source}: expected uint8 images [N, H, W, C] with C in 1, 3, 4, "
                            f"got {images.dtype} {tuple(images.shape)}")
        n, h, w, c = images.shape
        if resolution is None and h != w:
            raise UserError(f"{source}: images are {w}x{h}, not square; "
                            "give --resolution to centre-crop them")
        if labels is not None:
            labels = np.asarray(labels).astype(np.int64).reshape(-1)
            if len(labels) != n:
                raise UserError(f"{source}: {len(labels)} labels for {n} images")
        self.images = images
        self.labels = labels
        self.resolution = int(resolution or h)
        self.num_channels = int(channels or (1 if c == 1 else 3))
        if num_classes is None:
            labeled = labels is not None and len(labels) and labels.max() >= 0
            num_classes = int(labels.max()) + 1 if labeled else 0
        self.num_classes = num_classes
        self.class_names = class_names
        self.captions = captions
        self.description = description

    def __len__(self) -> int:
        return len(self.images)

    def image(self, index: int) -> np.ndarray:
        array = convert_array(np.asarray(self.images[index]), self.num_channels)
        return resize_array(array, self.resolution)
