"""LPIPS (Zhang et al. 2018, VGG variant) from a weights file the user supplies: a distance for consistency
training and a loss of the GigaGAN upsampler.

genzoo never downloads weights. The file is the ``state_dict`` of the ``lpips`` package's
``LPIPS(net="vgg")`` saved as ``.safetensors`` or a weights-only ``.pt``: keys ``scaling_layer.shift``,
``scaling_layer.scale``, ``net.slice{1..5}.<i>.weight/bias`` (VGG-16 ``features`` indices 0-29) and
``lin{0..4}.model.1.weight`` (1×1 convolutions without bias).

d(x, y) = Σ_l mean_hw ‖w_l ⊙ (φ̂_l(x) − φ̂_l(y))‖², φ̂ the channel-normalised VGG activations after
relu1_2, relu2_2, relu3_3, relu4_3, relu5_3. As in the consistency-models code, images below 256 px are
resized bilinearly to 224 and mapped from [−1, 1] to [0, 1] first.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from genzoo.checkpoints import load_state_into, read_state_dict

#: VGG-16 ``features``: conv layer indices of each LPIPS slice (a ReLU follows every conv; slices 2-5
#: start with a 2×2 max-pool)
SLICES = ((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28))
CHANNELS = ((3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256), (256, 512),
            (512, 512), (512, 512), (512, 512), (512, 512), (512, 512))
TAPS = (64, 128, 256, 512, 512)


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
        load_state_into(model, read_state_dict(path), f"--lpips-weights {path}")
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
            fx = fx / (fx.square().sum(1, keepdim=True).sqrt() + 1e-10)
            fy = fy / (fy.square().sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + getattr(self, f"lin{k}").model((fx - fy).square()).mean(dim=(1, 2, 3))
        return total

    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The consistency-models usage: resize below 256 px to 224 (bilinear), map [−1, 1] -> [0, 1]."""
        self.to(x.device)
        if x.shape[-1] < 256:
            x = F.interpolate(x, size=224, mode="bilinear", align_corners=False)
            y = F.interpolate(y, size=224, mode="bilinear", align_corners=False)
        return self((x + 1) / 2, (y + 1) / 2)
