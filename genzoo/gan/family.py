"""The ``gan`` family: BigGAN / BigGAN-deep here, GigaGAN delegated to :mod:`genzoo.gan.gigagan`.

genzoo train --family gan --arch biggan --dataset shapes --g-ch 16 --d-ch 16 ...
genzoo sample --ckpt runs/biggan --truncation 0.5 --class 3 --grid grid.png
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar

import torch
import torch.nn as nn

from genzoo import nets
from genzoo import validate as V
from genzoo.errors import UserError
from genzoo.family import Family
from genzoo.gan.augment import parse_policy
from genzoo.gan.losses import LOSSES, check_loss_name
from genzoo.gan.objective import GANObjective
from genzoo.gan.sampling import generate, standing_stats
from genzoo.nets.biggan import BigGANDeepGenerator, BigGANGenerator
from genzoo.options import Options, add_arguments, cached, option, options_from_argparse
from genzoo.seeds import StackedRandomGenerator

BigGANGenerators = (BigGANGenerator, BigGANDeepGenerator)

#: --arch name -> discriminator network name (the generator is registered under the arch name)
BIGGAN_ARCHES = {"biggan": "biggan-d", "biggan-deep": "biggan-deep-d"}
_GIGAGAN_MODULE = "genzoo.gan.gigagan"

#: BigGAN defaults (BigGAN-PyTorch's released ImageNet run: G lr 1e-4, D lr 4e-4, Adam eps 1e-6;
#: the paper's 2 D steps per G step)
DEFAULTS = {
    "d_steps": 2,
    "g_lr": 1e-4,
    "d_lr": 4e-4,
    "betas": "0,0.999",
    "adam_eps": 1e-6,
    "loss": "hinge",
    "ortho_reg": 0.0,
    "diffaugment": "",
    "r1_gamma": 0.0,
    "g_ch": 64,
    "d_ch": 64,
    "z_dim": 128,
    "shared_dim": 128,
}


def _gigagan() -> ModuleType | None:
    if importlib.util.find_spec(_GIGAGAN_MODULE) is None:
        return None
    return importlib.import_module(_GIGAGAN_MODULE)


def _delegate_for_arch(arch: str) -> ModuleType | None:
    """The GigaGAN module when ``arch`` is one of its networks, None for BigGAN archs."""
    if arch in BIGGAN_ARCHES:
        return None
    module = _gigagan()
    if module is not None and (arch.startswith("gigagan") or arch in getattr(module, "ARCHES", ())):
        return module
    known = list(BIGGAN_ARCHES) + (
        list(getattr(module, "ARCHES", ("gigagan",))) if module is not None else []
    )
    raise UserError(f"--arch: the gan family has no architecture {arch!r}; available: {', '.join(known)}")


def _get(config: dict[str, Any], key: str) -> Any:
    value = config.get(key)
    return DEFAULTS[key] if value is None else value


def parse_betas(text: str | tuple | list) -> tuple[float, float]:
    """``"0,0.999"`` -> (0.0, 0.999)."""
    if isinstance(text, (tuple, list)):
        values = list(text)
    else:
        values = str(text).split(",")
    try:
        b1, b2 = (float(v) for v in values)
    except ValueError:
        raise UserError(f"--betas: expected two numbers like '0,0.999', got {text!r}") from None
    if not (0 <= b1 < 1 and 0 <= b2 < 1):
        raise UserError(f"--betas: both must lie in [0, 1), got {text!r}")
    return b1, b2


def parse_resolutions(text: str | list | None) -> list[int] | None:
    """``"16,32"`` -> [16, 32]; "" or "none" -> []; None -> None (the architecture's default)."""
    if text is None or isinstance(text, list):
        return text
    if text.strip().lower() in ("", "none"):
        return []
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"--attn-res: expected resolutions like '32' or '16,32', got {text!r}") from None


@dataclass(frozen=True)
class BigGANTrainOptions(Options):
    """``genzoo train --family gan`` options (BigGAN's; GigaGAN's own come from
    :mod:`genzoo.gan.gigagan`, which also reads these). Unset: the ``DEFAULTS`` above."""

    family: ClassVar[str] = "gan"

    d_steps: int | None = option(None, V.positive_int,
                                 f"D updates per G update (BigGAN: {DEFAULTS['d_steps']})")
    g_lr: float | None = option(None, V.positive_float,
                                f"generator learning rate (BigGAN: {DEFAULTS['g_lr']})")
    d_lr: float | None = option(None, V.positive_float,
                                f"discriminator learning rate (BigGAN: {DEFAULTS['d_lr']})")
    betas: str | None = option(None, V.float_list(0, 1),
                               f"Adam betas for G and D (BigGAN: {DEFAULTS['betas']})")
    adam_eps: float | None = option(None, V.positive_float, f"Adam epsilon (BigGAN: {DEFAULTS['adam_eps']})")
    loss: str | None = option(None, help="GAN loss: hinge (BigGAN) or ns (non-saturating)", choices=LOSSES)
    ortho_reg: float | None = option(None, V.nonnegative_float,
                                     "β of BigGAN's orthogonal regularisation β‖WᵀW⊙(1−I)‖² on G "
                                     "(paper: 1e-4; "
                                     "default 0)")
    diffaugment: str | None = option(None, None, "DiffAugment policy for small datasets, e.g. "
                                                 "color,translation,cutout")
    r1_gamma: float | None = option(None, V.nonnegative_float,
                                    "R1 penalty weight γ on real images (default 0)")
    g_ch: int | None = option(None, V.positive_int, "generator channel width ch (BigGAN 128 px: 96)")
    d_ch: int | None = option(None, V.positive_int,
                              f"discriminator channel width ch (default {DEFAULTS['d_ch']})")
    z_dim: int | None = option(None, V.positive_int, "latent size (BigGAN: 120 hierarchical, -deep: 128)")
    shared_dim: int | None = option(None, V.positive_int,
                                    f"shared class-embedding size (BigGAN: {DEFAULTS['shared_dim']})")
    attn_res: str | None = option(None, V.int_list(1, allow_empty=True, words=("none",)),
                                  "self-attention resolutions in G and D, e.g. 64 or 16,32 (default: 64, or "
                                  "res/2 below 128 px); 'none' for none")


@dataclass(frozen=True)
class BigGANSampleOptions(Options):
    """``genzoo sample`` options of a BigGAN / BigGAN-deep generator."""

    family: ClassVar[str] = "gan (BigGAN)"

    truncation: float | None = option(None, V.positive_float,
                                      "GAN truncation ψ: latents drawn from N(0, 1) truncated to ±ψ "
                                      "(default: "
                                      "none)")
    standing_stats: int = option(0, V.nonnegative_int, "BigGAN: recompute batch-norm statistics over this "
                                                       "many batches of 64 samples", metavar="BATCHES")


@cached
def _gigagan_options(what: str) -> type[Options]:
    """GigaGAN's options, from the argparse declarations of :mod:`genzoo.gan.gigagan`."""
    module = _gigagan()
    declare = module.add_sample_arguments if what == "sample" else module.add_train_arguments
    return options_from_argparse(declare, f"GigaGAN{what.title()}Options", "gan (GigaGAN)")


def _arch_of(model: nn.Module) -> str:
    arch = (getattr(model, "config", None) or {}).get("arch")
    if arch is None:  # a bare module: BigGAN's generators are recognised by class
        arch = "biggan" if isinstance(model, BigGANGenerators) else "gigagan"
    return arch


class GANFamily(Family):
    name = "gan"
    TrainOptions = BigGANTrainOptions

    def add_train_arguments(self, parser: argparse.ArgumentParser) -> None:
        super().add_train_arguments(parser)
        module = _gigagan()
        if module is not None and hasattr(module, "add_train_arguments"):
            module.add_train_arguments(parser)

    def add_sample_arguments(self, parser: argparse.ArgumentParser) -> None:
        for kind in self.sample_option_types():
            add_arguments(parser, kind)

    def train_option_types(self) -> list[type[Options]]:
        types = [BigGANTrainOptions]
        module = _gigagan()
        if module is not None and hasattr(module, "add_train_arguments"):
            types.append(_gigagan_options("train"))
        return types

    def sample_option_types(self) -> list[type[Options]]:
        module = _gigagan()
        if module is not None and hasattr(module, "add_sample_arguments"):
            return [BigGANSampleOptions, _gigagan_options("sample")]
        return [BigGANSampleOptions]

    def sample_options_type(self, model: nn.Module) -> type[Options]:
        """BigGAN's options, or GigaGAN's for a GigaGAN generator."""
        return self.sample_option_types()[-1] if _delegate_for_arch(_arch_of(model)) else BigGANSampleOptions

    # ------------------------------------------------------------------ training

    def build_objective(self, config: dict[str, Any], dataset: Any) -> GANObjective:
        arch = config.get("arch") or "biggan"
        delegate = _delegate_for_arch(arch)
        if delegate is not None:
            return delegate.build_objective(config, dataset)
        num_classes = int(getattr(dataset, "num_classes", 0) or 0)
        resolution = int(dataset.resolution)
        channels = int(getattr(dataset, "num_channels", 3))
        attn = parse_resolutions(config.get("attn_res"))
        if attn is None:
            attn = [64] if resolution >= 128 else [resolution // 2]
        z_dim, g_ch, d_ch = int(_get(config, "z_dim")), int(_get(config, "g_ch")), int(_get(config, "d_ch"))
        g_net = {
            "resolution": resolution,
            "channels": channels,
            "ch": g_ch,
            "z_dim": z_dim,
            "shared_dim": int(_get(config, "shared_dim")),
            "num_classes": max(num_classes, 1),
            "attn_res": attn,
        }
        d_net = {
            "resolution": resolution,
            "channels": channels,
            "ch": d_ch,
            "num_classes": max(num_classes, 1),
            "attn_res": attn,
        }
        G, D = nets.build(arch, **g_net), nets.build(BIGGAN_ARCHES[arch], **d_net)
        g_net["z_dim"] = G.z_dim  # hierarchical latents round z_dim to a multiple of the chunk count
        check_loss_name(_get(config, "loss"))
        parse_policy(_get(config, "diffaugment"))
        # Resolved values go to config.json; D is rebuilt from them (d_ch, attn_res), only G from 'net'.
        config["attn_res"] = ",".join(str(r) for r in attn) or "none"
        for key in DEFAULTS:
            config[key] = _get(config, key)
        config.update(
            {
                "arch": arch,
                "net": g_net,
                "sampled_player": "G",
                "num_classes": num_classes,
                "resolution": resolution,
                "channels": channels,
            }
        )
        if config.get("ema") is None:
            config["ema"] = 0.9999
        return GANObjective(
            G,
            D,
            num_classes=num_classes,
            loss=config["loss"],
            d_steps=int(config["d_steps"]),
            g_lr=float(config["g_lr"]),
            d_lr=float(config["d_lr"]),
            betas=parse_betas(config["betas"]),
            adam_eps=float(config["adam_eps"]),
            ortho_reg=float(config["ortho_reg"]),
            diffaugment=config["diffaugment"],
            r1_gamma=float(config["r1_gamma"]),
            ortho_parameters=G.ortho_parameters,
        )

    def build_model(self, config: dict[str, Any]) -> nn.Module:
        arch = config.get("arch") or "biggan"
        delegate = _delegate_for_arch(arch)
        if delegate is not None:
            return delegate.build_model(config)
        if "net" not in config:
            raise UserError("config.json: a gan model needs a 'net' entry (the generator's settings)")
        return nets.build(arch, **config["net"])

    # ------------------------------------------------------------------ sampling

    def prompts_for(self, model: nn.Module, seeds: list[int], options: Any) -> list[str] | None:
        if getattr(model, "text", None) is None:  # BigGAN, or a GigaGAN without a text encoder
            return None
        from genzoo.gan.gigagan import prompts_for_seeds

        return prompts_for_seeds(seeds, options.get("prompt"), model.default_prompts)

    def sample(
        self,
        model: nn.Module,
        rng: StackedRandomGenerator,
        class_labels: torch.Tensor | None,
        options: Any,
    ) -> tuple[torch.Tensor, int]:
        options = self.sample_options(model, options)
        delegate = _delegate_for_arch(_arch_of(model))
        if delegate is not None:
            return delegate.sample(model, rng, class_labels, options)
        truncation = options.truncation
        batches = int(options.standing_stats)
        if batches > 0 and getattr(model, "_standing_key", None) != (batches, truncation):
            standing_stats(model, batches, truncation=truncation)
            model._standing_key = (batches, truncation)
        return generate(model, rng, class_labels, truncation), 1


FAMILY = GANFamily()
