"""The classifier family: ``genzoo train --family classifier`` trains ADM's noise-aware classifier.

Dhariwal & Nichol 2021 §4: a classifier p_φ(y | x_t, t) on images noised by the diffusion process at a
uniformly drawn step, later used for classifier guidance (``genzoo sample --classifier DIR
--classifier-scale s``, both with the ADM samplers and with the EDM ones). The network is the ADM
encoder with attention pooling (``adm-classifier``). The guidance flags are the diffusion family's
sample options.

config.json keys: ``arch`` (``adm-classifier``), ``net`` (its kwargs), ``discrete`` (the process the
classifier was trained on: steps, noise schedule), ``num_classes``, ``resolution``, ``channels``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from genzoo import nets
from genzoo import validate as V
from genzoo.diffusion.discrete import DiscreteDiffusion
from genzoo.diffusion.discrete_denoiser import discrete_from_config
from genzoo.diffusion.family import DiscreteProcessOptions
from genzoo.errors import UserError
from genzoo.family import Family
from genzoo.options import Options, option
from genzoo.seeds import StackedRandomGenerator, integers, normal_like
from genzoo.train.objective import Batch, Objective, OptimizerSpec, StepResult

DEFAULT_LR = 3e-4  # guided-diffusion README, 128x128 classifier
DEFAULT_WEIGHT_DECAY = 0.05


def classifier_network_config(config: dict[str, Any], dataset: Any) -> dict[str, Any]:
    """ADM classifier kwargs for the data: ``--classifier-width``/``-depth``/``-attention-resolutions``/
    ``-pool`` (public defaults 128, 2, 32,16,8, attention; the channel multipliers follow the resolution)."""
    if config.get("net"):
        return dict(config["net"])
    res = int(dataset.resolution)
    num_classes = int(getattr(dataset, "num_classes", 0) or 0)
    if num_classes < 2:
        raise UserError("--data: training a classifier needs labelled data with at least 2 classes")
    width = int(config.get("classifier_width") or 128)
    attn = config.get("classifier_attention_resolutions")
    return dict(
        image_size=res,
        in_channels=int(getattr(dataset, "num_channels", 3)),
        width=width,
        depth=int(config.get("classifier_depth") or 2),
        channel_mult=config.get("channel_mult") or ("1,2" if res <= 8 else "1,2,2" if res <= 32 else ""),
        attention_resolutions=str(attn if attn is not None else "32,16,8"),
        num_head_channels=min(64, width),
        pool=config.get("classifier_pool") or "attention",
        num_classes=num_classes,
        use_scale_shift_norm=True,
        resblock_updown=True,
    )


class ClassifierObjective(Objective):
    """Cross-entropy of the classifier on x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε with t uniform over the steps."""

    ema_players = ()
    sampled_player = "net"

    def __init__(
        self,
        classifier: nn.Module,
        diffusion: DiscreteDiffusion,
        lr: float = DEFAULT_LR,
        weight_decay: float = DEFAULT_WEIGHT_DECAY,
    ):
        super().__init__()
        self.players = nn.ModuleDict({"net": classifier})
        self.diffusion, self.lr, self.weight_decay = diffusion, float(lr), float(weight_decay)

    def optimizer_specs(self) -> dict[str, OptimizerSpec]:
        return {"net": OptimizerSpec(lr=self.lr, weight_decay=self.weight_decay)}

    def loss(self, player: str, batch: Batch, step: int) -> StepResult:
        images, labels = batch.images, batch.labels
        if (labels < 0).any():
            raise UserError("--data: every image needs a class label to train a classifier")
        n, T, rng = images.shape[0], self.diffusion.num_timesteps, getattr(batch, "rng", None)
        t, noise = integers(rng, 0, T, n, images.device), normal_like(rng, images)
        x_t = self.diffusion.q_sample(images, t, noise)
        logits = self.players["net"](x_t, self.diffusion.model_timesteps(t))
        loss = F.cross_entropy(logits.float(), labels)
        accuracy = (logits.argmax(dim=1) == labels).float().mean()
        return StepResult(loss, {"loss": float(loss.detach()), "accuracy": float(accuracy)})


@dataclass(frozen=True)
class ClassifierTrainOptions(DiscreteProcessOptions):
    """``genzoo train --family classifier`` options."""

    family: ClassVar[str] = "classifier"

    classifier_width: int | None = option(None, V.positive_int, "classifier base channels (default 128)")
    classifier_depth: int | None = option(None, V.positive_int, "classifier res blocks per level (default 2)")
    classifier_attention_resolutions: str | None = option(
        None, V.int_list(1), "classifier attention resolutions in pixels (default 32,16,8)")
    classifier_pool: str | None = option(None, help="classifier pooling (default attention)",
                                         choices=("attention", "adaptive", "spatial", "spatial_v2"))
    channel_mult: str | None = option(None, V.int_list(1), "channel multipliers per level (default 1,2 at "
                                                           "≤8 px, 1,2,2 at ≤32 px, else ADM's)")


@dataclass(frozen=True)
class ClassifierSampleOptions(Options):
    """A classifier samples nothing: it guides a diffusion model (``--classifier``)."""

    family: ClassVar[str] = "classifier"


class ClassifierFamily(Family):
    name = "classifier"
    TrainOptions = ClassifierTrainOptions
    SampleOptions = ClassifierSampleOptions

    def build_objective(self, config: dict[str, Any], dataset: Any) -> ClassifierObjective:
        net = classifier_network_config(config, dataset)
        discrete = config.get("discrete") or {
            "steps": int(config.get("diffusion_steps") or 1000),
            "noise_schedule": config.get("noise_schedule") or "linear",
            "learn_sigma": False,
        }
        config.update(
            arch="adm-classifier",
            net=net,
            discrete=discrete,
            num_classes=net["num_classes"],
            lr=float(config.get("lr") or DEFAULT_LR),
        )
        return ClassifierObjective(
            nets.build("adm-classifier", **net), discrete_from_config(discrete), lr=config["lr"]
        )

    def record_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """The classifier flags and the discrete process as applied (defaults resolved)."""
        net, discrete = config.get("net") or {}, config.get("discrete") or {}
        applied = {"classifier_width": net.get("width"), "classifier_depth": net.get("depth"),
                   "classifier_attention_resolutions": net.get("attention_resolutions") or None,
                   "classifier_pool": net.get("pool"), "channel_mult": net.get("channel_mult") or None,
                   "diffusion_steps": discrete.get("steps"), "noise_schedule": discrete.get("noise_schedule")}
        return {**config, **{k: v for k, v in applied.items() if v is not None}}

    def build_model(self, config: dict[str, Any]) -> nn.Module:
        if "net" not in config:
            raise UserError("config.json: a classifier model needs a 'net' entry")
        return nets.build(config.get("arch") or "adm-classifier", **config["net"])

    def sample(
        self,
        model: nn.Module,
        rng: StackedRandomGenerator,
        class_labels: torch.Tensor | None,
        options: dict[str, Any],
    ) -> tuple[torch.Tensor, int]:
        raise UserError(
            "--ckpt: a classifier does not generate images; use it to guide a diffusion model "
            "with `genzoo sample --ckpt MODEL --classifier CLASSIFIER`"
        )


FAMILY = ClassifierFamily()
