"""``--arch edm2`` in the diffusion family: EDM2's loss and learning-rate schedule defaults, and
decoding the samples of models that carry an EDM2 encoder (latent models decode with a local VAE).

The defaults follow the official ``edm2-img64-*`` presets (pixel space, the space genzoo trains in):
ln σ ~ N(−0.8, 1.6²), Adam β = (0.9, 0.99), α_ref 0.0100 (the S model), t_ref 35k batches of 2048 images.
The learning-rate ramp-up is the family's (10k images; EDM2 uses 10M); ``--lr-warmup-kimg`` sets it.
"""

from __future__ import annotations

from typing import Any

import torch

from genzoo.diffusion.encoders import StandardRGBEncoder, build_encoder
from genzoo.errors import UserError

DEFAULT_LR_REF = 0.0100
DEFAULT_DECAY_KIMG = 35_000 * 2048 / 1000
DEFAULT_P_MEAN, DEFAULT_P_STD = -0.8, 1.6
ADAM_BETAS = (0.9, 0.99)
LOGVAR_CHANNELS = 128


def resolve_training(config: dict[str, Any], arch: str, precond: str, loss: str, default_lr: float) -> None:
    """Fill ``config`` with the learning rate (``--lr-ref`` = ``--lr``), ``--decay-kimg`` and, for the EDM2
    loss, P_mean/P_std defaults; refuse combinations that cannot work."""
    if loss == "edm2" and precond != "edm2":
        raise UserError(f"--loss edm2: needs --precond edm2 (the learned logvar head), not {precond}")
    lr, lr_ref = config.get("lr"), config.get("lr_ref")
    if lr is not None and lr_ref is not None and float(lr) != float(lr_ref):
        raise UserError(f"--lr {lr} and --lr-ref {lr_ref}: the same setting (α_ref); give one")
    chosen = lr_ref if lr_ref is not None else lr
    is_edm2 = arch == "edm2"
    config["lr"] = float(chosen) if chosen is not None else (DEFAULT_LR_REF if is_edm2 else default_lr)
    decay = config.get("decay_kimg")
    config["decay_kimg"] = float(decay) if decay is not None else (DEFAULT_DECAY_KIMG if is_edm2 else 0.0)
    if config["decay_kimg"] < 0:
        raise UserError(f"--decay-kimg: expected a number >= 0, got {decay}")
    if loss == "edm2":
        config["p_mean"] = float(config["p_mean"]) if config.get("p_mean") is not None else DEFAULT_P_MEAN
        config["p_std"] = float(config["p_std"]) if config.get("p_std") is not None else DEFAULT_P_STD


def model_encoder(model: Any, config: dict[str, Any]) -> StandardRGBEncoder | None:
    """The model's EDM2 encoder (from ``config["encoder"]``, kept on the model once built), or None."""
    encoder = getattr(model, "encoder", None)
    if encoder is None and config.get("encoder"):
        encoder = build_encoder(config["encoder"])
        object.__setattr__(model, "encoder", encoder)
    return encoder


def prepare_encoder(encoder: StandardRGBEncoder | None, options: dict[str, Any],
                    device: torch.device) -> None:
    """``--vae`` is for latent models only, and latent models need it: the VAE is loaded (once) before
    sampling, so a bad path fails before any network evaluation."""
    vae = options.get("vae")
    if not getattr(encoder, "latent", False):
        if vae:
            raise UserError(f"--vae {vae}: this model works in pixel space; it takes no VAE")
        return
    encoder.init(device, vae)


def decode(encoder: StandardRGBEncoder, latents: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW pixels from the sampler's output, as the official ``encoder.decode``."""
    return encoder.decode(latents)
