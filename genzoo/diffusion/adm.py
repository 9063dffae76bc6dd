"""The diffusion family's ADM adapters: the samplers ``adm-ddpm``/``adm-ddim``, ADM classifier guidance
for every sampler (``--classifier``), super-resolution base samples (``--low-res``) and ``--arch adm``'s
network settings. The process is :mod:`genzoo.diffusion.discrete`, the denoiser
:mod:`genzoo.diffusion.discrete_denoiser`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn

from genzoo.checkpoints.record import config_of
from genzoo.diffusion.discrete_denoiser import (
    DiscreteClassifier,
    DiscreteDenoiser,
    classifier_cond_fn,
    discrete_from_config,
)
from genzoo.diffusion.guidance import ClassifierGuidance, _Wrapper
from genzoo.errors import UserError
from genzoo.io.images import from_uint8

_CLASSIFIERS: dict[tuple[str, str], nn.Module] = {}


def load_classifier(path: Any, device: torch.device) -> nn.Module:
    """A noise-aware classifier (trained with ``--family classifier`` or converted with ``genzoo
    convert``): the model itself when the API has loaded it, else loaded from its directory, cached per
    path and device across batches."""
    if isinstance(path, nn.Module):
        return path
    key = (str(path), str(device))
    if key not in _CLASSIFIERS:
        from genzoo.family import load_model

        model = load_model(path, device=device)
        if config_of(model).get("family") != "classifier":
            raise UserError(
                f"--classifier {path}: not a classifier model (family {config_of(model).get('family')!r})"
            )
        _CLASSIFIERS[key] = model
    return _CLASSIFIERS[key]


def seed_labels(seeds: Sequence[int], num_classes: int, device: torch.device) -> torch.Tensor:
    """One class per seed, drawn from the seed alone (the labels ``genzoo.api.sample`` draws): the classes an
    unconditional model is guided toward, as the public classifier_sample.py draws random classes."""
    from genzoo.seeds import labels_for_seeds

    return torch.tensor(labels_for_seeds(list(seeds), None, int(num_classes)), device=device,
                        dtype=torch.long)


def classifier_scale(options: dict[str, Any], model: Any) -> float:
    """``--classifier-scale``, else the converted checkpoint's README value (``classifier_scale``), else 1."""
    if options.get("classifier_scale") is not None:
        return float(options["classifier_scale"])
    return float(config_of(model).get("classifier_scale", 1.0))


def with_classifier_guidance(net: Any, denoiser: Any, options: dict[str, Any], rng: Any) -> Any:
    """``net`` with ADM classifier guidance (``--classifier PATH --classifier-scale s``) for EDM samplers:
    :class:`~genzoo.diffusion.guidance.ClassifierGuidance` over the classifier in σ form. An unconditional
    model is guided toward a class drawn per seed (it never sees the label)."""
    path = options.get("classifier")
    if not path or str(options.get("sampler") or "").startswith("adm-"):  # the ADM samplers guide themselves
        return net
    device = getattr(rng, "device", rng)  # a StackedRandomGenerator (or, from older callers, a device)
    classifier = load_classifier(path, device)
    if isinstance(denoiser, DiscreteDenoiser):
        diffusion = denoiser.diffusion
    else:
        diffusion = discrete_from_config(config_of(classifier).get("discrete") or {})
    scale = classifier_scale(options, denoiser)
    sigma_classifier = DiscreteClassifier(classifier, diffusion)
    if int(getattr(denoiser, "label_dim", 0) or 0):
        return ClassifierGuidance(net, sigma_classifier, scale)
    if getattr(rng, "seeds", None) is None:
        raise UserError("--classifier: guiding an unconditional model needs the batch's seeds")
    labels = seed_labels(rng.seeds, classifier.num_classes, device)
    return _GuideToward(net, sigma_classifier, scale, labels)


class _LabelFree(_Wrapper):
    """A denoiser that ignores class labels (an unconditional model under classifier guidance)."""

    def forward(self, x: torch.Tensor, sigma: Any, class_labels: Any = None, **cond: Any) -> torch.Tensor:
        return self.denoiser(x, sigma, None, **cond)


class _GuideToward(ClassifierGuidance):
    """Classifier guidance toward fixed labels; the guided denoiser sees none."""

    def __init__(self, denoiser: Any, classifier: Any, scale: float, labels: torch.Tensor):
        super().__init__(_LabelFree(denoiser), classifier, scale)
        self.labels = labels

    def forward(self, x: torch.Tensor, sigma: Any, class_labels: Any = None, **cond: Any) -> torch.Tensor:
        return super().forward(x, sigma, self.labels, **cond)


def _respacing(denoiser: DiscreteDenoiser, options: dict[str, Any], ddim: bool) -> str:
    if options.get("respacing"):
        return str(options["respacing"])
    if options.get("steps"):
        return f"ddim{int(options['steps'])}" if ddim else str(int(options["steps"]))
    default = getattr(denoiser, "default_respacing", "")
    if default and default.startswith("ddim") == ddim:
        return default
    return "ddim25" if ddim else "250"


def _seeds(randn_like: Any, flag: str) -> list[int]:
    """The seeds of the batch, from the per-seed generator whose ``randn_like`` the sampler got."""
    seeds = getattr(getattr(randn_like, "__self__", None), "seeds", None)
    if seeds is None:
        raise UserError(f"{flag}: needs per-seed generators (genzoo.api.sample) to pair seeds with images")
    return list(seeds)


def low_res_batch(
    options: dict[str, Any], randn_like: Any, net: nn.Module, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The ``--low-res`` base samples (an ADM .npz: arr_0 uint8 NHWC, arr_1 labels) of this batch's seeds:
    seed s upsamples image s (as the public super_res_sample.py pairs them, in order), in [−1, 1]."""
    from genzoo.io import read_npz_images

    path = options.get("low_res")
    if not path:
        raise UserError("--low-res: a super-resolution model needs the .npz of base samples to upsample")
    seeds = _seeds(randn_like, "--low-res")
    images, labels = read_npz_images(path)
    if max(seeds) >= len(images):
        raise UserError(
            f"--low-res {path}: {len(images)} images, but seed {max(seeds)} asks for image {max(seeds)}"
        )
    size = int(net.small_size)
    if images.shape[1:3] != (size, size):
        raise UserError(
            f"--low-res {path}: expected {size}x{size} images, got {images.shape[1]}x{images.shape[2]}"
        )
    batch = from_uint8(torch.from_numpy(images[seeds]).to(device).permute(0, 3, 1, 2))
    return batch, (torch.from_numpy(labels[seeds]).to(device).long() if labels is not None else None)


def _adm_sampler(ddim: bool) -> Callable[..., torch.Tensor]:
    def run(
        counter: Any,
        latents: torch.Tensor,
        class_labels: torch.Tensor | None,
        randn_like: Any,
        options: dict[str, Any],
    ) -> torch.Tensor:
        denoiser = getattr(counter, "net", counter)
        if not isinstance(denoiser, DiscreteDenoiser):
            raise UserError(
                f"--sampler adm-{'ddim' if ddim else 'ddpm'}: needs a discrete (ADM/iDDPM) model without "
                "--guidance; use the EDM samplers for other models"
            )
        diffusion = denoiser.diffusion.respace(_respacing(denoiser, options, ddim))
        cond: dict[str, torch.Tensor] = {}
        if getattr(denoiser.model, "small_size", None):  # a super-resolution model: --low-res base samples
            cond["low_res"], labels = low_res_batch(options, randn_like, denoiser.model, latents.device)
            if labels is not None and denoiser.label_dim:
                class_labels = labels
        cond_fn = None
        if options.get("classifier"):
            classifier = load_classifier(options["classifier"], latents.device)
            toward = None
            if class_labels is None:  # an unconditional model: guide toward a class drawn per seed
                toward = seed_labels(
                    _seeds(randn_like, "--classifier"), classifier.num_classes, latents.device
                )
            cond_fn = classifier_cond_fn(classifier, classifier_scale(options, denoiser), toward)
        x, nfe = diffusion.sample(
            denoiser.model,
            latents,
            class_labels,
            ddim=ddim,
            eta=float(options.get("eta") or 0.0),
            clip_denoised=not options.get("no_clip"),
            cond_fn=cond_fn,
            randn_like=randn_like,
            **cond,
        )
        if hasattr(counter, "nfe"):
            counter.nfe += nfe
        return x

    return run


def adm_network_kwargs(config: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """``--arch adm`` for ``genzoo train --family diffusion``: ADM UNet kwargs from the shared network flags
    (``--model-channels``, ``--channel-mult``, ``--num-blocks``, ``--attn-res``, ``--dropout``). With
    ``--precond iddpm`` the discrete process (``--diffusion-steps``, ``--noise-schedule``) is written to
    ``config["discrete"]``; ``--loss hybrid`` makes the network learn its variances."""
    if base.get("augment_dim"):
        raise UserError("--augment: the ADM UNet has no augmentation input; train it with --augment 0")
    res, label_dim = int(base["resolution"]), int(base.get("label_dim") or 0)
    learn_sigma = config.get("loss") in ("hybrid", "vlb")
    kwargs = dict(
        image_size=res,
        in_channels=int(base.get("in_channels", 3)),
        num_channels=int(config.get("model_channels") or 64),
        num_res_blocks=int(config.get("num_blocks") or 2),
        channel_mult=str(config.get("channel_mult") or ("1,2" if res <= 8 else "1,2,2" if res <= 32 else "")),
        attention_resolutions=str(config.get("attn_res") or max(res // 2, 1)),
        dropout=float(config.get("dropout") or 0.0),
        num_head_channels=32,
        class_cond=label_dim > 0,
        num_classes=label_dim or 1000,
        null_label=label_dim > 0,
        learn_sigma=learn_sigma,
        use_scale_shift_norm=True,
        resblock_updown=True,
        use_new_attention_order=True,
    )
    if config.get("precond") == "iddpm" and not config.get("discrete"):
        config["discrete"] = {
            "steps": int(config.get("diffusion_steps") or 1000),
            "noise_schedule": config.get("noise_schedule") or "cosine",
            "learn_sigma": learn_sigma,
            "loss": "kl" if config.get("loss") == "vlb" else "hybrid",
            "rescale_timesteps": False,
            "rescale_learned_sigmas": False,
            "respacing": "",
        }
    return kwargs


#: entries for genzoo.diffusion.family's SAMPLERS and ARCH_KWARGS
SAMPLERS = {"adm-ddpm": _adm_sampler(ddim=False), "adm-ddim": _adm_sampler(ddim=True)}
ARCH_KWARGS = {"adm": adm_network_kwargs}
