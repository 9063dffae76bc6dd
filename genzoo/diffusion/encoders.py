"""Pixel ↔ latent encoders of EDM2 (NVlabs/edm2 ``training/encoders.py``): what the network's inputs and
outputs are.

Raw pixels are uint8 NCHW. ``encode_pixels`` turns them into raw latents (what a dataset stores),
``encode_latents`` raw latents into final latents (what the network sees), ``decode`` final latents into
uint8 pixels. :class:`StandardRGBEncoder` is the pixel-space identity with [0, 255] ↔ [−1, 1];
:class:`StabilityVAEEncoder` runs a Stable Diffusion VAE (diffusers ``AutoencoderKL``) read from a local
folder the user names (``--vae PATH``): nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from genzoo.errors import UserError

Tensor = torch.Tensor

#: the official StabilityVAEEncoder defaults (statistics of sd-vae-ft-mse latents of ImageNet-512)
VAE_RAW_MEAN = (5.81, 3.25, 0.12, -2.15)
VAE_RAW_STD = (4.17, 4.62, 3.71, 3.28)


class StandardRGBEncoder:
    """Pixels scaled to [−1, 1]: x/127.5 − 1; decoded as (x·127.5 + 128) clipped and truncated to uint8."""

    name = "standard_rgb"
    latent = False

    def config(self) -> dict[str, Any]:
        return {"name": self.name}

    def encode(self, x: Tensor) -> Tensor:
        return self.encode_latents(self.encode_pixels(x))

    def encode_pixels(self, x: Tensor) -> Tensor:
        return x

    def encode_latents(self, x: Tensor, randn_like: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        return x.to(torch.float32) / 127.5 - 1

    def decode(self, x: Tensor) -> Tensor:
        return (x.to(torch.float32) * 127.5 + 128).clip(0, 255).to(torch.uint8)


class StabilityVAEEncoder(StandardRGBEncoder):
    """Stable Diffusion VAE latents whitened per channel: final = raw·s + b with s = final_std/raw_std,
    b = final_mean − raw_mean·s (float32, as the official encoder). The raw latents are the VAE posterior's
    mean and std (8 channels); ``encode_latents`` draws mean + std·n. The VAE sees pixels in [0, 1] and its
    output is clamped to [0, 1] and truncated to uint8, as in the official code.

    ``vae_path``: a local diffusers ``AutoencoderKL`` folder (``config.json`` + weights), loaded on first use.
    ``vae_name`` records the Hugging Face name the official pickle names (informational only).
    """

    name = "stability_vae"
    latent = True

    def __init__(self, vae_path: str | Path | None = None, raw_mean: Sequence[float] = VAE_RAW_MEAN,
                 raw_std: Sequence[float] = VAE_RAW_STD, final_mean: float | Sequence[float] = 0.0,
                 final_std: float | Sequence[float] = 0.5, batch_size: int = 8,
                 vae_name: str = "stabilityai/sd-vae-ft-mse"):
        self.raw_mean, self.raw_std = _floats(raw_mean), _floats(raw_std)
        self.final_mean, self.final_std = final_mean, final_std
        f32 = torch.float32
        self.scale = torch.as_tensor(final_std, dtype=f32) / torch.as_tensor(self.raw_std, dtype=f32)
        raw_mean_f32 = torch.as_tensor(self.raw_mean, dtype=f32)
        self.bias = torch.as_tensor(final_mean, dtype=f32) - raw_mean_f32 * self.scale
        self.batch_size = int(batch_size)
        self.vae_name = vae_name
        self.vae_path = str(vae_path) if vae_path is not None else None
        self._vae: Any = None

    def config(self) -> dict[str, Any]:
        config = {"name": self.name, "raw_mean": self.raw_mean, "raw_std": self.raw_std,
                  "final_mean": _json(self.final_mean), "final_std": _json(self.final_std),
                  "batch_size": self.batch_size, "vae_name": self.vae_name}
        return config | ({"vae_path": self.vae_path} if self.vae_path else {})

    def init(self, device: torch.device | str, vae_path: str | Path | None = None) -> None:
        """Load the VAE from ``vae_path`` (or the one given at construction) onto ``device``, once."""
        if vae_path is not None and str(vae_path) != self.vae_path:
            self.vae_path, self._vae = str(vae_path), None
        if self._vae is None:
            self._vae = load_vae(self.vae_path)
        self._vae.to(device)

    def _affine(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.scale.to(x.device).reshape(1, -1, 1, 1), self.bias.to(x.device).reshape(1, -1, 1, 1)

    @torch.no_grad()
    def encode_pixels(self, x: Tensor) -> Tensor:
        self.init(x.device)
        x = x.to(torch.float32) / 255
        parts = []
        for batch in x.split(self.batch_size):
            dist = self._vae.encode(batch)["latent_dist"]
            parts.append(torch.cat([dist.mean, dist.std], dim=1))
        return torch.cat(parts)

    def encode_latents(self, x: Tensor, randn_like: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        mean, std = x.to(torch.float32).chunk(2, dim=1)
        x = mean + (randn_like or torch.randn_like)(mean) * std
        scale, bias = self._affine(x)
        return x * scale + bias

    @torch.no_grad()
    def decode(self, x: Tensor) -> Tensor:
        self.init(x.device)
        scale, bias = self._affine(x)
        x = (x.to(torch.float32) - bias) / scale
        x = torch.cat([self._vae.decode(batch)["sample"] for batch in x.split(self.batch_size)])
        return x.clamp(0, 1).mul(255).to(torch.uint8)


ENCODERS: dict[str, type[StandardRGBEncoder]] = {"standard_rgb": StandardRGBEncoder,
                                                 "stability_vae": StabilityVAEEncoder}


def build_encoder(config: dict[str, Any]) -> StandardRGBEncoder:
    """The encoder a ``config.json`` ``encoder`` entry describes."""
    config = dict(config)
    name = config.pop("name", None)
    if name not in ENCODERS:
        raise UserError(f"config.json: unknown encoder {name!r}; expected one of {', '.join(ENCODERS)}")
    return ENCODERS[name](**config)


def load_vae(path: str | Path | None) -> Any:
    """diffusers ``AutoencoderKL.from_pretrained`` on a local folder, eval mode, no gradients."""
    if not path:
        raise UserError("--vae PATH: this latent model decodes with a Stable Diffusion VAE; give the local "
                        "folder of a diffusers AutoencoderKL (e.g. stabilityai/sd-vae-ft-mse)")
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise UserError(f"--vae {folder}: expected a diffusers AutoencoderKL folder with config.json")
    try:
        from diffusers import AutoencoderKL
    except ImportError:
        raise UserError(f"--vae {folder}: needs the diffusers package (pip install 'genzoo[edm2]')") from None
    try:
        vae = AutoencoderKL.from_pretrained(str(folder), local_files_only=True, low_cpu_mem_usage=False)
    except (OSError, ValueError) as err:
        first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"--vae {folder}: cannot load an AutoencoderKL ({first_line})") from None
    return vae.eval().requires_grad_(False)


def _floats(values: float | Sequence[float]) -> list[float]:
    return [float(v) for v in torch.as_tensor(values, dtype=torch.float64).reshape(-1)]


def _json(value: float | Sequence[float]) -> float | list[float]:
    """A float, or a list for per-channel values (lists, tuples, arrays)."""
    return _floats(value) if torch.as_tensor(value).ndim else float(value)
