"""The TensorFlow "inception-2015-12-05" network used by FID, sFID and IS, in PyTorch.

Weight-compatible with the two converted files people already have (same parameter names, those of
torchvision's Inception-v3 layout; pytorch-fid's also stores BatchNorm ``num_batches_tracked``):

- torch-fidelity: ``weights-inception-2015-12-05-6726825d.pth``
- pytorch-fid:    ``pt_inception-2015-12-05-6726825d.pth``

and with a saved state dict of pytorch-fid's ``InceptionV3`` wrapper (``blocks.N.M.*``, no classifier
head, so no IS). The TF graph differs from torchvision's Inception-v3 in three ways reproduced here:
average pools exclude padding, the last block pools by max, and the head has 1008 classes. Inputs are
resized to 299×299 with TF1's bilinear resize (no half-pixel centres) and scaled by (x − 128) / 128.

Nothing is downloaded: the file is given by ``--inception PATH`` or ``GENZOO_INCEPTION``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from genzoo.errors import UserError

INCEPTION_ENV = "GENZOO_INCEPTION"
INCEPTION_FILES = ("weights-inception-2015-12-05-6726825d.pth", "pt_inception-2015-12-05-6726825d.pth")
INCEPTION_SIZE = 299
SFID_CHANNELS = 7  # sFID: the first 7 channels of mixed_6/conv (17×17) -> 2023 features (ADM evaluator)

MISSING_WEIGHTS_MESSAGE = (
    "the FID Inception network needs its weights, and genzoo never downloads. Get one of\n"
    "  weights-inception-2015-12-05-6726825d.pth  (torch-fidelity release v0.2.0 on GitHub) or\n"
    "  pt_inception-2015-12-05-6726825d.pth       (pytorch-fid release 'fid_weights' on GitHub)\n"
    "put it anywhere (e.g. ~/.cache/genzoo/) and pass --inception PATH or set GENZOO_INCEPTION=PATH. "
    "On the built-in shapes data, --features shapes needs no download.")


# ----------------------------------------------------------------------------- resize


def tf1_resize_bilinear(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """TF1 ``resize_bilinear`` (align_corners=False, no half-pixel centres) of float NCHW images.

    Output pixel i samples input coordinate i·(in/out) (float32 scale, as TF computes it), with the
    upper neighbour clamped to the last pixel; the lerps run along x first, then y, in TF's order
    ``top + (bottom - top)·dy``. This is the resize inside the TF Inception graph; PyTorch's
    ``interpolate`` (half-pixel centres) moves FID by whole points.
    """
    out_h, out_w = size

    def taps(in_size: int, out_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        scale = torch.tensor(in_size / out_size, dtype=torch.float32)
        pos = torch.arange(out_size, dtype=torch.float32) * scale
        lo = pos.floor().long()
        hi = (lo + 1).clamp_max(in_size - 1)
        return lo.to(images.device), hi.to(images.device), (pos - lo.float()).to(images.device, images.dtype)

    y0, y1, dy = taps(images.shape[-2], out_h)
    x0, x1, dx = taps(images.shape[-1], out_w)
    left, right = images[..., x0], images[..., x1]
    rows = left + (right - left) * dx
    top, bottom = rows[..., y0, :], rows[..., y1, :]
    return top + (bottom - top) * dy[:, None]


# ----------------------------------------------------------------------------- network


class ConvBN(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3, TF's) -> ReLU: the unit every Inception layer is made of."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int | tuple[int, int],
                 stride: int = 1, padding: int | tuple[int, int] = 0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_tf(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def _max_pool_same(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, 3, stride=1, padding=1)


def _max_pool_reduce(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, 3, stride=2)


class MixedBlock(nn.Module):
    """Parallel towers concatenated along channels.

    ``towers`` is a list of step lists. A step is the name of a :class:`ConvBN` unit, a tuple of
    unit names applied side by side to the same input and concatenated (the split ends of the last
    blocks), or a pooling function. ``units`` maps each name to (in, out, kernel, stride, padding).
    """

    def __init__(self, units: Mapping[str, tuple], towers: Sequence[Sequence]):
        super().__init__()
        for name, spec in units.items():
            self.add_module(name, ConvBN(*spec))
        self.towers = towers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = []
        for tower in self.towers:
            h = x
            for step in tower:
                if callable(step):
                    h = step(h)
                elif isinstance(step, tuple):
                    h = torch.cat([getattr(self, name)(h) for name in step], 1)
                else:
                    h = getattr(self, step)(h)
            outputs.append(h)
        return torch.cat(outputs, 1)


def block_a(c: int, pool_features: int) -> MixedBlock:
    """35×35 block (TF mixed, mixed_1, mixed_2): 64 + 64 + 96 + pool_features channels."""
    return MixedBlock({"branch1x1": (c, 64, 1), "branch5x5_1": (c, 48, 1), "branch5x5_2": (48, 64, 5, 1, 2),
                       "branch3x3dbl_1": (c, 64, 1), "branch3x3dbl_2": (64, 96, 3, 1, 1),
                       "branch3x3dbl_3": (96, 96, 3, 1, 1), "branch_pool": (c, pool_features, 1)},
                      [["branch1x1"], ["branch5x5_1", "branch5x5_2"],
                       ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"], [_avg_pool_tf, "branch_pool"]])


def block_b(c: int) -> MixedBlock:
    """35 -> 17 reduction (TF mixed_3): 384 + 96 + c channels."""
    return MixedBlock({"branch3x3": (c, 384, 3, 2), "branch3x3dbl_1": (c, 64, 1),
                       "branch3x3dbl_2": (64, 96, 3, 1, 1), "branch3x3dbl_3": (96, 96, 3, 2)},
                      [["branch3x3"], ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"],
                       [_max_pool_reduce]])


def block_c(c: int, c7: int) -> MixedBlock:
    """17×17 block with factorised 7×7 convolutions (TF mixed_4..mixed_7): 4 × 192 channels."""
    row, col = ((1, 7), (0, 3)), ((7, 1), (3, 0))
    return MixedBlock({"branch1x1": (c, 192, 1),
                       "branch7x7_1": (c, c7, 1), "branch7x7_2": (c7, c7, row[0], 1, row[1]),
                       "branch7x7_3": (c7, 192, col[0], 1, col[1]),
                       "branch7x7dbl_1": (c, c7, 1), "branch7x7dbl_2": (c7, c7, col[0], 1, col[1]),
                       "branch7x7dbl_3": (c7, c7, row[0], 1, row[1]),
                       "branch7x7dbl_4": (c7, c7, col[0], 1, col[1]),
                       "branch7x7dbl_5": (c7, 192, row[0], 1, row[1]), "branch_pool": (c, 192, 1)},
                      [["branch1x1"], ["branch7x7_1", "branch7x7_2", "branch7x7_3"],
                       [f"branch7x7dbl_{i}" for i in range(1, 6)], [_avg_pool_tf, "branch_pool"]])


def block_d(c: int) -> MixedBlock:
    """17 -> 8 reduction (TF mixed_8): 320 + 192 + c channels."""
    return MixedBlock({"branch3x3_1": (c, 192, 1), "branch3x3_2": (192, 320, 3, 2),
                       "branch7x7x3_1": (c, 192, 1), "branch7x7x3_2": (192, 192, (1, 7), 1, (0, 3)),
                       "branch7x7x3_3": (192, 192, (7, 1), 1, (3, 0)), "branch7x7x3_4": (192, 192, 3, 2)},
                      [["branch3x3_1", "branch3x3_2"], [f"branch7x7x3_{i}" for i in range(1, 5)],
                       [_max_pool_reduce]])


def block_e(c: int, pool) -> MixedBlock:
    """8×8 block with split 1×3 / 3×1 ends (TF mixed_9, mixed_10): 320 + 768 + 768 + 192 = 2048 channels."""
    return MixedBlock({"branch1x1": (c, 320, 1), "branch3x3_1": (c, 384, 1),
                       "branch3x3_2a": (384, 384, (1, 3), 1, (0, 1)),
                       "branch3x3_2b": (384, 384, (3, 1), 1, (1, 0)),
                       "branch3x3dbl_1": (c, 448, 1), "branch3x3dbl_2": (448, 384, 3, 1, 1),
                       "branch3x3dbl_3a": (384, 384, (1, 3), 1, (0, 1)),
                       "branch3x3dbl_3b": (384, 384, (3, 1), 1, (1, 0)), "branch_pool": (c, 192, 1)},
                      [["branch1x1"], ["branch3x3_1", ("branch3x3_2a", "branch3x3_2b")],
                       ["branch3x3dbl_1", "branch3x3dbl_2", ("branch3x3dbl_3a", "branch3x3dbl_3b")],
                       [pool, "branch_pool"]])


class InceptionFID(nn.Module):
    """Inception-v3 as in the TF FID graph. ``forward(uint8 or 0..255 float NCHW RGB)`` returns a dict:

    - ``pool``: pool_3 features [N, 2048] (FID, KID, precision/recall)
    - ``spatial``: mixed_6/conv, first 7 channels, flattened in TF's HWC order [N, 2023] (sFID)
    - ``logits``: unbiased logits [N, 1008] (pool_3 · Wᵀ without the bias; IS), if the head is present
    """

    def __init__(self, head: bool = True):
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, 2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, 1, 1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = block_a(192, 32)
        self.Mixed_5c = block_a(256, 64)
        self.Mixed_5d = block_a(288, 64)
        self.Mixed_6a = block_b(288)
        self.Mixed_6b = block_c(768, 128)
        self.Mixed_6c = block_c(768, 160)
        self.Mixed_6d = block_c(768, 160)
        self.Mixed_6e = block_c(768, 192)
        self.Mixed_7a = block_d(768)
        self.Mixed_7b = block_e(1280, _avg_pool_tf)
        self.Mixed_7c = block_e(2048, _max_pool_same)  # the TF graph max-pools here
        self.fc = nn.Linear(2048, 1008) if head else None
        self._spatial: torch.Tensor | None = None
        # TF's mixed_6/conv is the ReLU output of the first 1x1 unit of Mixed_6d (the 4th 17x17 block).
        self.Mixed_6d.branch1x1.register_forward_hook(self._keep_spatial)

    def _keep_spatial(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        self._spatial = output[:, :SFID_CHANNELS]

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = images.to(self.Conv2d_1a_3x3.conv.weight.dtype)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = tf1_resize_bilinear(x, (INCEPTION_SIZE, INCEPTION_SIZE))
        x = (x - 128) / 128
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(_max_pool_reduce(x)))
        x = _max_pool_reduce(x)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        pool = x.mean(dim=(2, 3))
        spatial, self._spatial = self._spatial, None
        out = {"pool": pool.float(), "spatial": spatial.permute(0, 2, 3, 1).flatten(1).float()}
        if self.fc is not None:
            out["logits"] = (pool @ self.fc.weight.T).float()
        return out


# ----------------------------------------------------------------------------- weights

# pytorch-fid's InceptionV3 wrapper: blocks[i][j] -> the named layer (its max pools hold no weights).
_WRAPPER_LAYERS = {
    (0, 0): "Conv2d_1a_3x3", (0, 1): "Conv2d_2a_3x3", (0, 2): "Conv2d_2b_3x3",
    (1, 0): "Conv2d_3b_1x1", (1, 1): "Conv2d_4a_3x3",
    **{(2, i): f"Mixed_{n}" for i, n in enumerate(("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e"))},
    (3, 0): "Mixed_7a", (3, 1): "Mixed_7b", (3, 2): "Mixed_7c",
}


def canonical_inception_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map any supported key layout to this module's names; drop BatchNorm ``num_batches_tracked``."""
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    out = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        key = key.removeprefix("module.")
        if key.endswith("num_batches_tracked"):
            continue
        match = re.match(r"blocks\.(\d+)\.(\d+)\.(.*)$", key)
        if match:
            layer = _WRAPPER_LAYERS.get((int(match.group(1)), int(match.group(2))))
            key = f"{layer}.{match.group(3)}" if layer else key
        out[key] = value
    return out


def load_inception(path: str | Path | None = None, device: str | torch.device = "cpu") -> InceptionFID:
    """The FID Inception network with weights from ``path``, else ``$GENZOO_INCEPTION``.

    Raises :class:`UserError` saying which file to get when neither is given or the file is missing,
    and naming the file when its keys or shapes do not match.
    """
    from genzoo.checkpoints import load_torch_file, weights_file

    path = weights_file(path, "--inception", INCEPTION_ENV, MISSING_WEIGHTS_MESSAGE)
    state = load_torch_file(path)
    if not isinstance(state, Mapping):
        raise UserError(f"--inception {path}: expected a state dict, got {type(state).__name__}")
    return inception_from_state(state, str(path)).to(device)


def inception_from_state(state: Mapping[str, torch.Tensor], source: str = "state dict") -> InceptionFID:
    """Build the network and load a state dict in any supported layout (strict apart from the head)."""
    from genzoo.checkpoints import load_state_into

    state = canonical_inception_state(state)
    with torch.device("meta"):  # every tensor is about to be overwritten: skip the random init
        model = InceptionFID(head="fc.weight" in state)
    model = model.to_empty(device="cpu")
    # BatchNorm step counters are not weights; files differ in whether they store them.
    state.update({k: torch.tensor(0) for k in model.state_dict() if k.endswith("num_batches_tracked")})
    load_state_into(model, state, source)
    return model.eval().requires_grad_(False)
