"""The ``gan`` family: BigGAN / BigGAN-deep and R3GAN here, GigaGAN delegated to :mod:`genzoo.gan.gigagan`.

genzoo train --family gan --arch biggan --dataset shapes --g-ch 16 --d-ch 16 ...
genzoo sample --ckpt runs/biggan --truncation 0.5 --class 3 --grid grid.png
"""

from __future__ import annotations

import argparse
import weakref
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar

import torch
import torch.nn as nn

from genzoo import nets
from genzoo import validate as V
from genzoo.checkpoints.record import config_of
from genzoo.errors import UserError
from genzoo.family import Family
from genzoo.gan import gigagan
from genzoo.gan.augment import parse_policy
from genzoo.gan.objective import GANObjective
from genzoo.gan.parse import parse_betas, parse_resolutions
from genzoo.gan.sampling import generate, standing_stats
from genzoo.nets.biggan import BigGANDeepGenerator, BigGANGenerator
from genzoo.nets.r3gan import R3GANGenerator
from genzoo.options import Options, add_arguments, option
from genzoo.seeds import StackedRandomGenerator
from genzoo.train.adversarial import LOSSES, check_loss_name

BigGANGenerators = (BigGANGenerator, BigGANDeepGenerator)

#: --arch name -> discriminator network name (the generator is registered under the arch name)
GAN_ARCHES = {"biggan": "biggan-d", "biggan-deep": "biggan-deep-d", "r3gan": "r3gan-d"}

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
    "r2_gamma": 0.0,
    "g_ch": 64,
    "d_ch": 64,
    "z_dim": 128,
    "shared_dim": 128,
}

#: R3GAN's CIFAR-10 config (brownvc/R3GAN train.py, its values at the start of training): Adam β = (0, 0.9),
#: ε 1e-8, lr 2e-4 for both, one D step, z 64, RpGAN loss with γ 0.05 for R1 and R2 at 32 px. γ multiplies
#: a squared gradient norm summed over pixels, so it is scaled by (resolution/32)² (as StyleGAN2-ADA's
#: heuristic γ ∝ resolution²): 0.0125 at 16 px.
R3GAN_DEFAULTS = {
    "d_steps": 1,
    "g_lr": 2e-4,
    "d_lr": 2e-4,
    "betas": "0,0.9",
    "adam_eps": 1e-8,
    "loss": "rpgan",
    "z_dim": 64,
}
R3GAN_GAMMA_32PX = 0.05
#: BigGAN options R3GAN's networks do not take
R3GAN_REFUSES = ("shared_dim", "attn_res")


def r3gan_gamma(resolution: int) -> float:
    """R3GAN's CIFAR-10 γ (32 px) scaled to ``resolution``: 0.05·(resolution/32)²."""
    return R3GAN_GAMMA_32PX * (resolution / 32) ** 2


def _delegate_for_arch(arch: str) -> ModuleType | None:
    """The GigaGAN module when ``arch`` is one of its networks, None for BigGAN archs."""
    if arch in GAN_ARCHES:
        return None
    if arch in gigagan.ARCHES:
        return gigagan
    known = list(GAN_ARCHES) + list(gigagan.ARCHES)
    raise UserError(f"--arch: the gan family has no architecture {arch!r}; available: {', '.join(known)}")


def _get(config: dict[str, Any], key: str, defaults: dict[str, Any] = DEFAULTS) -> Any:
    value = config.get(key)
    return defaults[key] if value is None else value


def _network_configs(arch: str, config: dict[str, Any], resolution: int, channels: int,
                     num_classes: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(G's net config, D's net config, the family defaults for ``arch``)."""
    if arch == "r3gan":
        for key in R3GAN_REFUSES:
            if config.get(key) is not None:
                raise UserError(f"--{key.replace('_', '-')}: --arch r3gan does not take it")
        gamma = r3gan_gamma(resolution)
        defaults = {**DEFAULTS, **R3GAN_DEFAULTS, "r1_gamma": gamma, "r2_gamma": gamma}
        common = {"resolution": resolution, "channels": channels, "num_classes": num_classes}
        g_net = {**common, "ch": int(_get(config, "g_ch", defaults)),
                 "z_dim": int(_get(config, "z_dim", defaults))}
        return g_net, {**common, "ch": int(_get(config, "d_ch", defaults))}, defaults
    attn = parse_resolutions(config.get("attn_res"))
    if attn is None:
        attn = [64] if resolution >= 128 else [resolution // 2]
    # Resolved values go to config.json; D is rebuilt from them (d_ch, attn_res), only G from 'net'.
    config["attn_res"] = ",".join(str(r) for r in attn) or "none"
    common = {"resolution": resolution, "channels": channels, "num_classes": max(num_classes, 1),
              "attn_res": attn}
    g_net = {**common, "ch": int(_get(config, "g_ch")), "z_dim": int(_get(config, "z_dim")),
             "shared_dim": int(_get(config, "shared_dim"))}
    return g_net, {**common, "ch": int(_get(config, "d_ch"))}, DEFAULTS


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
    loss: str | None = option(None, help="GAN loss: hinge (BigGAN), ns (non-saturating; GigaGAN) or rpgan "
                                         "(R3GAN's relativistic pairing loss; pair it with --r1-gamma and "
                                         "--r2-gamma)", choices=LOSSES)
    ortho_reg: float | None = option(None, V.nonnegative_float,
                                     "β of BigGAN's orthogonal regularisation β‖WᵀW⊙(1−I)‖² on G "
                                     "(paper: 1e-4; "
                                     "default 0)")
    diffaugment: str | None = option(None, None, "DiffAugment policy for small datasets, e.g. "
                                                 "color,translation,cutout")
    r1_gamma: float | None = option(None, V.nonnegative_float,
                                    "R1 penalty weight γ on real images (default 0; GigaGAN 0.1)")
    r2_gamma: float | None = option(None, V.nonnegative_float,
                                    "R2 penalty weight γ on generated images (default 0; R3GAN uses γ for "
                                    "both R1 and R2)")
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


#: the (batches, truncation) each generator's batch-norm statistics were last recomputed for
_STANDING: weakref.WeakKeyDictionary[nn.Module, tuple[int, float]] = weakref.WeakKeyDictionary()


def _arch_of(model: nn.Module) -> str:
    arch = config_of(model).get("arch")
    if arch is None:  # a bare module: BigGAN's generators are recognised by class
        arch = ("biggan" if isinstance(model, BigGANGenerators)
                else "r3gan" if isinstance(model, R3GANGenerator) else "gigagan")
    return arch


class GANFamily(Family):
    name = "gan"
    TrainOptions = BigGANTrainOptions

    def add_train_arguments(self, parser: argparse.ArgumentParser) -> None:
        super().add_train_arguments(parser)
        kind = gigagan.GigaGANTrainOptions
        add_arguments(parser.add_argument_group(kind.group), kind)

    def add_sample_arguments(self, parser: argparse.ArgumentParser) -> None:
        for kind in self.sample_option_types():
            add_arguments(parser, kind)

    def train_option_types(self) -> list[type[Options]]:
        return [BigGANTrainOptions, gigagan.GigaGANTrainOptions]

    def sample_option_types(self) -> list[type[Options]]:
        return [BigGANSampleOptions, gigagan.GigaGANSampleOptions]

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
        g_net, d_net, defaults = _network_configs(arch, config, resolution, channels, num_classes)
        G, D = nets.build(arch, **g_net), nets.build(GAN_ARCHES[arch], **d_net)
        g_net["z_dim"] = G.z_dim  # hierarchical latents round z_dim to a multiple of the chunk count
        check_loss_name(_get(config, "loss", defaults))
        parse_policy(_get(config, "diffaugment", defaults))
        for key in defaults:
            if not (arch == "r3gan" and key in R3GAN_REFUSES):
                config[key] = _get(config, key, defaults)
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
            r2_gamma=float(config["r2_gamma"]),
            ortho_parameters=G.ortho_parameters,
        )

    def record_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """Only the options of this run's arch: BigGAN and R3GAN runs leave GigaGAN's out, GigaGAN runs
        the BigGAN options GigaGAN does not read (and the other GigaGAN network's)."""
        arch = config.get("arch") or "biggan"
        if _delegate_for_arch(arch) is None:
            foreign = set(gigagan.GigaGANTrainOptions.names()) - set(BigGANTrainOptions.names())
        else:
            foreign = set(gigagan.NOT_READ) | set(gigagan.NOT_READ_BY.get(arch, ()))
        return {k: v for k, v in config.items() if k not in foreign}

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
        return gigagan.prompts_for_seeds(seeds, options.get("prompt"), model.default_prompts)

    def sample(
        self,
        model: nn.Module,
        rng: StackedRandomGenerator,
        class_labels: torch.Tensor | None,
        options: Any,
    ) -> tuple[torch.Tensor, int]:
        options = self.sample_options(model, options)
        arch = _arch_of(model)
        delegate = _delegate_for_arch(arch)
        if delegate is not None:
            return delegate.sample(model, rng, class_labels, options)
        truncation = options.truncation
        batches = int(options.standing_stats)
        if batches > 0 and arch == "r3gan":
            raise UserError("--standing-stats: R3GAN has no batch norm; leave the option out")
        if batches > 0 and _STANDING.get(model) != (batches, truncation):
            standing_stats(model, batches, truncation=truncation)
            _STANDING[model] = (batches, truncation)
        return generate(model, rng, class_labels, truncation), 1


FAMILY = GANFamily()
