"""Conversions between float images in [-1, 1] and uint8, PNG grids and single images."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from genzoo.errors import UserError
from genzoo.io.atomic import atomic_output, check_output_file


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float NCHW in [-1, 1] -> uint8 NCHW, rounding as ADM/EDM do: ((x + 1) * 127.5).clamp.round."""
    if images.dtype == torch.uint8:
        return images
    return ((images.detach().float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def from_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 (or 0..255 float) images -> float32 in [-1, 1]: x/127.5 − 1, the inverse of :func:`to_uint8`
    up to its rounding."""
    return images.to(torch.float32) / 127.5 - 1


def _as_nhwc_uint8(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """Tensors are NCHW (float in [-1, 1] or uint8); numpy arrays are uint8 NHWC."""
    if isinstance(images, torch.Tensor):
        images = to_uint8(images).cpu().numpy().transpose(0, 2, 3, 1)
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"expected a batch of images [N, H, W, C] uint8, got {images.shape} {images.dtype}")
    return images


def grid_array(images: torch.Tensor | np.ndarray, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile a batch (float NCHW in [-1,1], uint8 NCHW tensor, or uint8 NHWC array) into one HWC array."""
    batch = _as_nhwc_uint8(images)
    n, h, w, c = batch.shape
    ncol = nrow or max(1, math.ceil(math.sqrt(n)))
    nrows = math.ceil(n / ncol)
    canvas = np.full((nrows * (h + pad) + pad, ncol * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        canvas[y:y + h, x:x + w] = batch[i]
    return canvas


def save_grid(images: torch.Tensor | np.ndarray, path: str | Path, nrow: int | None = None,
              scale: int = 1) -> Path:
    """Save a batch as one PNG grid (``nrow`` images per row), optionally enlarged by ``scale``."""
    canvas = grid_array(images, nrow)
    return save_image(canvas, path, scale=scale)


def save_image(image: np.ndarray | torch.Tensor, path: str | Path, scale: int = 1) -> Path:
    """Save one HWC uint8 array (or CHW float/uint8 tensor) as an image file."""
    if isinstance(image, torch.Tensor):
        image = _as_nhwc_uint8(image[None])[0]
    path = Path(path)
    check_image_name(path, "image")
    pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    if scale != 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    with atomic_output(path, "image") as tmp:
        pil.save(tmp, format=Image.registered_extensions()[path.suffix.lower()])
    return path


def check_image_name(path: str | Path, flag: str = "--grid") -> Path:
    """Refuse an output image name whose suffix is not an image format PIL writes (before any work)."""
    path = Path(path)
    formats = Image.registered_extensions()
    if path.suffix.lower() not in formats or formats[path.suffix.lower()] not in Image.SAVE:
        raise UserError(f"{flag} {path}: expected an image file name ending in .png (or .jpg, .webp, ...)")
    return check_output_file(path, flag)


def load_image(path: str | Path, channels: int = 3) -> np.ndarray:
    """Read an image file as uint8 HWC with ``channels`` channels (1 grayscale, 3 RGB)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such image file")
    try:
        with Image.open(path) as pil:
            pil = pil.convert("L" if channels == 1 else "RGB")
            array = np.asarray(pil, dtype=np.uint8)
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: not a readable image ({err})") from None
    return array[..., None] if channels == 1 else array
