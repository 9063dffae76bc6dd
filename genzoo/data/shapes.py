"""The built-in dataset: coloured geometric shapes, rendered procedurally from each item's index.

Each item is one shape (circle, square, triangle, cross) in one colour (red, green, blue, yellow)
at a random position, size and rotation on a low-saturation background with a soft gradient. The
class is ``shape_index * len(COLOR_NAMES) + color_index`` (16 classes). Every parameter of item
``i`` is a counter-based hash of ``(seed, i, field)``, so an item never depends on the dataset
length, the resolution, or which process renders it. Shapes are drawn at 4x (2x above 64 px) the
target resolution and box-filtered down, which anti-aliases the edges.

Backgrounds keep their chroma (max - min channel) at most ~25 while shape colours have chroma
above 140, so :func:`classify_color` can read the foreground colour back from any image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from genzoo.data.base import ImageDataset

SHAPE_NAMES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
COLOR_NAMES: tuple[str, ...] = ("red", "green", "blue", "yellow")
COLOR_RGB: tuple[tuple[int, int, int], ...] = ((220, 30, 30), (30, 170, 50), (35, 70, 225), (230, 200, 30))
SIZE_NAMES: tuple[str, ...] = ("small", "medium", "large")
DEFAULT_COUNT = 50_000
DEFAULT_RESOLUTION = 32

# Radius of the shape as a fraction of the image side, split into thirds for the size word.
_RADIUS_RANGE = (0.14, 0.32)
# Chroma (max - min channel) above which a pixel counts as foreground in classify_color.
_FOREGROUND_CHROMA = 60.0
# Per-item random fields, in this order (a counter-based hash per field keeps them independent).
_FIELDS = ("shape", "color", "radius", "x", "y", "rotation", "brightness", "bg_lum", "bg_r", "bg_g",
           "bg_b", "bg_angle", "bg_delta")


def _hash_uniforms(seed: int, indices: np.ndarray, num_fields: int) -> np.ndarray:
    """Uniform [0, 1) floats [len(indices), num_fields] from SplitMix64 of (seed, index, field)."""
    with np.errstate(over="ignore"):
        counter = (indices.astype(np.uint64)[:, None] * np.uint64(num_fields)
                   + np.arange(num_fields, dtype=np.uint64)[None, :])
        x = counter + np.uint64((seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) % (1 << 64))
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _hue(rgb: torch.Tensor) -> torch.Tensor:
    """Hue in degrees of float RGB along dim 1 (HSV definition); undefined (0) where chroma is 0."""
    r, g, b = rgb.unbind(1)
    mx, _ = rgb.max(1)
    mn, _ = rgb.min(1)
    chroma = (mx - mn).clamp_min(1e-6)
    h = torch.where(mx == r, torch.remainder((g - b) / chroma, 6.0),
                    torch.where(mx == g, (b - r) / chroma + 2.0, (r - g) / chroma + 4.0))
    return h * 60.0


_COLOR_HUES = _hue(torch.tensor(COLOR_RGB, dtype=torch.float32)[:, :, None, None])[:, 0, 0]


def classify_color(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """The ground-truth colour rule: index into COLOR_NAMES of each image's foreground colour.

    ``images`` is uint8 NCHW (float NCHW in [-1, 1] is accepted too). Pixels whose chroma exceeds
    60/255 are foreground; each votes, weighted by its chroma, for the named colour nearest in hue.
    Returns int64 [N]; -1 for an image without coloured pixels.
    """
    x = torch.as_tensor(images)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"classify_color expects RGB images [N, 3, H, W], got {tuple(x.shape)}")
    x = x.float() if x.dtype == torch.uint8 else (x.float() + 1) * 127.5
    chroma = x.max(1).values - x.min(1).values
    weight = torch.where(chroma > _FOREGROUND_CHROMA, chroma, torch.zeros_like(chroma))
    distance = (_hue(x)[:, None] - _COLOR_HUES.to(x.device)[None, :, None, None]).abs()
    distance = torch.minimum(distance, 360.0 - distance)
    nearest = distance.argmin(1)
    votes = torch.zeros(x.shape[0], len(COLOR_NAMES), device=x.device)
    votes.scatter_add_(1, nearest.flatten(1), weight.flatten(1))
    result = votes.argmax(1)
    return torch.where(votes.sum(1) > 0, result, torch.full_like(result, -1))


def class_name(label: int) -> str:
    """``"red triangle"`` for a label ``shape * len(COLOR_NAMES) + color``."""
    shape, color = divmod(int(label), len(COLOR_NAMES))
    if not 0 <= shape < len(SHAPE_NAMES):
        raise ValueError(f"label {label} outside 0..{len(SHAPE_NAMES) * len(COLOR_NAMES) - 1}")
    return f"{COLOR_NAMES[color]} {SHAPE_NAMES[shape]}"


def location_phrase(x: float, y: float) -> str:
    """Where a centre (fractions of the image, y down) lies on a 3x3 grid, as an English phrase."""
    col = 0 if x < 1 / 3 else (2 if x > 2 / 3 else 1)
    row = 0 if y < 1 / 3 else (2 if y > 2 / 3 else 1)
    vertical = ("top", "middle", "bottom")[row]
    horizontal = ("left", "center", "right")[col]
    if row == 1 and col == 1:
        return "in the center"
    if col == 1:
        return f"at the {vertical}"
    if row == 1:
        return f"on the {horizontal}"
    return f"in the {vertical} {horizontal}"


#: every phrase :func:`location_phrase` can return
LOCATION_PHRASES: tuple[str, ...] = tuple(
    location_phrase(x, y) for y in (1 / 6, 1 / 2, 5 / 6) for x in (1 / 6, 1 / 2, 5 / 6)
)
#: the captions' attributes and the words or phrases each takes (swapping one makes a caption that is
#: wrong in exactly that attribute: the negatives of GigaGAN's matching-aware loss and its probes)
ATTRIBUTE_WORDS: dict[str, tuple[str, ...]] = {
    "shape": SHAPE_NAMES, "color": COLOR_NAMES, "size": SIZE_NAMES, "position": LOCATION_PHRASES,
}


def _background_word(luminance: float) -> str:
    return "dark" if luminance < 95 else ("light" if luminance > 165 else "gray")


def _polygon(shape: str, cx: float, cy: float, r: float, degrees: float) -> list[tuple[float, float]]:
    """Vertices of a shape of nominal radius ``r`` (sizes chosen for roughly equal area)."""
    if shape == "square":
        h = 0.886 * r
        local = [(-h, -h), (h, -h), (h, h), (-h, h)]
    elif shape == "triangle":
        R = 1.3 * r
        local = [(R * np.sin(a), -R * np.cos(a)) for a in (0.0, 2 * np.pi / 3, 4 * np.pi / 3)]
    elif shape == "cross":
        a, w = 1.05 * r, 0.42 * r
        local = [(w, -a), (w, -w), (a, -w), (a, w), (w, w), (w, a), (-w, a), (-w, w), (-a, w), (-a, -w),
                 (-w, -w), (-w, -a)]
    else:
        raise ValueError(shape)
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return [(cx + c * px - s * py, cy + s * px + c * py) for px, py in local]


class _Captions(Sequence):
    """Captions computed on demand (a lazy, picklable sequence)."""

    def __init__(self, dataset: ShapesDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self.dataset.caption(self.dataset._check_index(index))


class ShapesDataset(ImageDataset):
    """Procedural coloured shapes; ``shapes``, ``shapes:RES``, options ``?count=N&seed=S``."""

    def __init__(self, resolution: int = DEFAULT_RESOLUTION, count: int = DEFAULT_COUNT, seed: int = 0):
        if resolution < 4:
            raise ValueError(f"shapes: resolution must be at least 4, got {resolution}")
        self.resolution = int(resolution)
        self.num_channels = 3
        self.num_classes = len(SHAPE_NAMES) * len(COLOR_NAMES)
        self.class_names = [class_name(i) for i in range(self.num_classes)]
        self.count = int(count)
        self.seed = int(seed)
        self.description = f"shapes seed={seed}"
        self.supersample = 4 if self.resolution <= 64 else 2
        u = _hash_uniforms(self.seed, np.arange(self.count), len(_FIELDS))
        p = {name: u[:, k] for k, name in enumerate(_FIELDS)}
        self.shape_index = np.minimum((p["shape"] * len(SHAPE_NAMES)).astype(np.int64), len(SHAPE_NAMES) - 1)
        self.color_index = np.minimum((p["color"] * len(COLOR_NAMES)).astype(np.int64), len(COLOR_NAMES) - 1)
        self.labels = self.shape_index * len(COLOR_NAMES) + self.color_index
        lo, hi = _RADIUS_RANGE
        self.radius = lo + (hi - lo) * p["radius"]
        self.x = self.radius + (1 - 2 * self.radius) * p["x"]
        self.y = self.radius + (1 - 2 * self.radius) * p["y"]
        self.rotation = 360.0 * p["rotation"]
        self.brightness = 0.8 + 0.2 * p["brightness"]
        self.bg_luminance = 20 + 215 * p["bg_lum"]
        self.bg_tint = 20 * (np.stack([p["bg_r"], p["bg_g"], p["bg_b"]], 1) - 0.5)
        self.bg_angle = 2 * np.pi * p["bg_angle"]
        self.bg_delta = 70 * (p["bg_delta"] - 0.5)
        self.captions = _Captions(self)
        self.attribute_words = ATTRIBUTE_WORDS

    def __len__(self) -> int:
        return self.count

    def attributes(self, index: int) -> dict:
        """Ground truth of item ``index``: names, label, and the exact geometry (fractions of the side)."""
        i = self._check_index(index)
        size = min(int((self.radius[i] - _RADIUS_RANGE[0]) / (_RADIUS_RANGE[1] - _RADIUS_RANGE[0]) * 3), 2)
        color = tuple(int(round(v * self.brightness[i])) for v in COLOR_RGB[self.color_index[i]])
        return {
            "shape": SHAPE_NAMES[self.shape_index[i]], "color": COLOR_NAMES[self.color_index[i]],
            "label": int(self.labels[i]), "size": SIZE_NAMES[size], "radius": float(self.radius[i]),
            "x": float(self.x[i]), "y": float(self.y[i]), "rotation": float(self.rotation[i]),
            "location": location_phrase(self.x[i], self.y[i]), "rgb": color,
            "background": _background_word(self.bg_luminance[i]),
            "background_luminance": float(self.bg_luminance[i]),
        }

    def caption(self, index: int) -> str:
        a = self.attributes(index)
        return f"a {a['size']} {a['color']} {a['shape']} {a['location']} on a {a['background']} background"

    def _background(self, i: int) -> np.ndarray:
        """Float HWC background: tinted gray plus a linear gradient of +-bg_delta across the image."""
        n = self.resolution
        coords = (np.arange(n) + 0.5) / n - 0.5
        ramp = np.cos(self.bg_angle[i]) * coords[None, :] + np.sin(self.bg_angle[i]) * coords[:, None]
        base = self.bg_luminance[i] + self.bg_tint[i]
        return np.clip(base[None, None, :] + (self.bg_delta[i] * ramp)[..., None], 0, 255)

    def _mask(self, i: int) -> np.ndarray:
        """Anti-aliased coverage in [0, 1] (HxW): drawn at ``supersample`` x and box-filtered down."""
        ss = self.supersample
        size = self.resolution * ss
        canvas = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(canvas)
        cx, cy, r = self.x[i] * size, self.y[i] * size, self.radius[i] * size
        shape = SHAPE_NAMES[self.shape_index[i]]
        if shape == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        else:
            draw.polygon(_polygon(shape, cx, cy, r, self.rotation[i]), fill=255)
        return np.asarray(canvas.reduce(ss), dtype=np.float64) / 255.0

    def image(self, index: int) -> np.ndarray:
        i = int(index)
        alpha = self._mask(i)[..., None]
        color = np.asarray(COLOR_RGB[self.color_index[i]], dtype=np.float64) * self.brightness[i]
        out = self._background(i) * (1 - alpha) + color * alpha
        return np.round(out).astype(np.uint8)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        i = self._check_index(index)
        return torch.from_numpy(self.image(i).transpose(2, 0, 1).copy()), int(self.labels[i])


def caption_class(caption: str) -> int:
    """The class (shape · len(COLOR_NAMES) + colour) a caption or prompt names; −1 if it names none."""
    words = str(caption).lower().replace(",", " ").split()
    color = next((COLOR_NAMES.index(w) for w in words if w in COLOR_NAMES), None)
    shape = next((SHAPE_NAMES.index(w) for w in words if w in SHAPE_NAMES), None)
    return -1 if color is None or shape is None else shape * len(COLOR_NAMES) + color
