"""Official checkpoints of openai/guided-diffusion (ADM) and openai/improved-diffusion (iDDPM).

Sources ``guided-diffusion`` and ``improved-diffusion`` with one preset per released checkpoint,
named after its file (``64x64_diffusion``, ``cifar10_uncond_50M_500K``, ...). A preset holds the
public scripts' flags from the repositories' READMEs on top of each script's defaults: the network
flags and the diffusion flags (steps, schedule, learned sigmas, timestep rescaling) that sampling
needs. Files are read with ``torch.load(weights_only=True)`` or safetensors, never unpickled.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from genzoo.checkpoints import OfficialSource, load_state_into, register_source
from genzoo.checkpoints.record import note_import, official_import
from genzoo.errors import UserError
from genzoo.nets.adm import ADMClassifier, ADMSuperRes, ADMUNet

# The scripts' defaults (script_util.py of each repository) that the READMEs' flags override.
GUIDED_DEFAULTS: dict[str, Any] = dict(
    image_size=64,
    num_channels=128,
    num_res_blocks=2,
    num_heads=4,
    num_heads_upsample=-1,
    num_head_channels=-1,
    attention_resolutions="16,8",
    channel_mult="",
    dropout=0.0,
    class_cond=False,
    use_checkpoint=False,
    use_scale_shift_norm=True,
    resblock_updown=False,
    use_fp16=False,
    use_new_attention_order=False,
    learn_sigma=False,
    diffusion_steps=1000,
    noise_schedule="linear",
    timestep_respacing="",
    use_kl=False,
    predict_xstart=False,
    rescale_timesteps=False,
    rescale_learned_sigmas=False,
)
IMPROVED_DEFAULTS: dict[str, Any] = dict(
    image_size=64,
    num_channels=128,
    num_res_blocks=2,
    num_heads=4,
    num_heads_upsample=-1,
    attention_resolutions="16,8",
    dropout=0.0,
    learn_sigma=False,
    sigma_small=False,
    class_cond=False,
    diffusion_steps=1000,
    noise_schedule="linear",
    timestep_respacing="",
    use_kl=False,
    predict_xstart=False,
    rescale_timesteps=True,
    rescale_learned_sigmas=True,
    use_checkpoint=False,
    use_scale_shift_norm=True,
)
CLASSIFIER_DEFAULTS: dict[str, Any] = dict(
    image_size=64,
    classifier_use_fp16=False,
    classifier_width=128,
    classifier_depth=2,
    classifier_attention_resolutions="32,16,8",
    classifier_use_scale_shift_norm=True,
    classifier_resblock_updown=True,
    classifier_pool="attention",
)
SR_DEFAULTS: dict[str, Any] = {
    **{k: v for k, v in GUIDED_DEFAULTS.items() if k != "image_size"},
    "large_size": 256,
    "small_size": 64,
}

_ADM_COMMON = dict(
    attention_resolutions="32,16,8",
    diffusion_steps=1000,
    learn_sigma=True,
    resblock_updown=True,
    use_fp16=True,
    use_scale_shift_norm=True,
    timestep_respacing="250",
)
_LSUN = dict(
    _ADM_COMMON,
    class_cond=False,
    dropout=0.1,
    image_size=256,
    noise_schedule="linear",
    num_channels=256,
    num_head_channels=64,
    num_res_blocks=2,
    timestep_respacing="1000",
)

# kind: "unet" (ADMUNet), "sr" (ADMSuperRes) or "classifier" (ADMClassifier); classifier_scale and
# timestep_respacing are the READMEs' sampling settings, kept as defaults for `genzoo sample`.
GUIDED_PRESETS: dict[str, dict[str, Any]] = {
    "64x64_diffusion": dict(
        GUIDED_DEFAULTS,
        **_ADM_COMMON,
        kind="unet",
        class_cond=True,
        dropout=0.1,
        image_size=64,
        noise_schedule="cosine",
        num_channels=192,
        num_head_channels=64,
        num_res_blocks=3,
        use_new_attention_order=True,
        classifier_scale=1.0,
    ),
    "128x128_diffusion": dict(
        GUIDED_DEFAULTS,
        **_ADM_COMMON,
        kind="unet",
        class_cond=True,
        image_size=128,
        noise_schedule="linear",
        num_channels=256,
        num_heads=4,
        num_res_blocks=2,
        classifier_scale=0.5,
    ),
    "256x256_diffusion": dict(
        GUIDED_DEFAULTS,
        **_ADM_COMMON,
        kind="unet",
        class_cond=True,
        image_size=256,
        noise_schedule="linear",
        num_channels=256,
        num_head_channels=64,
        num_res_blocks=2,
        classifier_scale=1.0,
    ),
    "256x256_diffusion_uncond": dict(
        GUIDED_DEFAULTS,
        **_ADM_COMMON,
        kind="unet",
        class_cond=False,
        image_size=256,
        noise_schedule="linear",
        num_channels=256,
        num_head_channels=64,
        num_res_blocks=2,
        classifier_scale=10.0,
    ),
    "512x512_diffusion": dict(
        GUIDED_DEFAULTS,
        **dict(_ADM_COMMON, use_fp16=False),
        kind="unet",
        class_cond=True,
        image_size=512,
        noise_schedule="linear",
        num_channels=256,
        num_head_channels=64,
        num_res_blocks=2,
        classifier_scale=4.0,
    ),
    "64_256_upsampler": dict(
        SR_DEFAULTS,
        **_ADM_COMMON,
        kind="sr",
        class_cond=True,
        large_size=256,
        small_size=64,
        noise_schedule="linear",
        num_channels=192,
        num_heads=4,
        num_res_blocks=2,
    ),
    "128_512_upsampler": dict(
        SR_DEFAULTS,
        **dict(_ADM_COMMON, attention_resolutions="32,16"),
        kind="sr",
        class_cond=True,
        large_size=512,
        small_size=128,
        noise_schedule="linear",
        num_channels=192,
        num_head_channels=64,
        num_res_blocks=2,
    ),
    "64x64_classifier": dict(CLASSIFIER_DEFAULTS, kind="classifier", image_size=64, classifier_depth=4),
    "128x128_classifier": dict(CLASSIFIER_DEFAULTS, kind="classifier", image_size=128),
    "256x256_classifier": dict(CLASSIFIER_DEFAULTS, kind="classifier", image_size=256),
    "512x512_classifier": dict(CLASSIFIER_DEFAULTS, kind="classifier", image_size=512),
    "lsun_bedroom": dict(GUIDED_DEFAULTS, **_LSUN, kind="unet"),
    "lsun_cat": dict(GUIDED_DEFAULTS, **_LSUN, kind="unet"),
    "lsun_horse": dict(GUIDED_DEFAULTS, **_LSUN, kind="unet"),
    "lsun_horse_nodropout": dict(GUIDED_DEFAULTS, **dict(_LSUN, dropout=0.0), kind="unet"),
}

_IDDPM_COSINE = dict(diffusion_steps=4000, noise_schedule="cosine", learn_sigma=True)
_IDDPM_LSUN = dict(
    IMPROVED_DEFAULTS,
    kind="unet",
    image_size=256,
    num_channels=128,
    num_res_blocks=2,
    num_heads=1,
    learn_sigma=True,
    use_scale_shift_norm=False,
    attention_resolutions="16",
    diffusion_steps=1000,
    noise_schedule="linear",
    rescale_learned_sigmas=False,
    rescale_timesteps=False,
)
IMPROVED_PRESETS: dict[str, dict[str, Any]] = {
    "imagenet64_uncond_100M_1500K": dict(
        IMPROVED_DEFAULTS, **_IDDPM_COSINE, kind="unet", image_size=64, num_channels=128, num_res_blocks=3
    ),
    "cifar10_uncond_50M_500K": dict(
        IMPROVED_DEFAULTS,
        **_IDDPM_COSINE,
        kind="unet",
        image_size=32,
        num_channels=128,
        num_res_blocks=3,
        dropout=0.3,
    ),
    "imagenet64_cond_270M_250K": dict(
        IMPROVED_DEFAULTS,
        **_IDDPM_COSINE,
        kind="unet",
        image_size=64,
        num_channels=192,
        num_res_blocks=3,
        class_cond=True,
        rescale_learned_sigmas=False,
        rescale_timesteps=False,
    ),
    "upsample_cond_500K": dict(
        {k: v for k, v in IMPROVED_DEFAULTS.items() if k != "image_size"},
        kind="sr",
        large_size=256,
        small_size=64,
        num_channels=192,
        num_res_blocks=2,
        learn_sigma=True,
        class_cond=True,
        diffusion_steps=4000,
        noise_schedule="linear",
        rescale_learned_sigmas=False,
        rescale_timesteps=False,
    ),
    "lsun_uncond_100M_1200K_bs128": dict(_IDDPM_LSUN),
    "lsun_uncond_100M_2400K_bs64": dict(_IDDPM_LSUN),
    "imagenet64_uncond_vlb_100M_1500K": dict(
        IMPROVED_DEFAULTS,
        **_IDDPM_COSINE,
        kind="unet",
        image_size=64,
        num_channels=128,
        num_res_blocks=3,
        use_kl=True,
    ),
    "cifar10_uncond_vlb_50M_500K": dict(
        IMPROVED_DEFAULTS,
        **_IDDPM_COSINE,
        kind="unet",
        image_size=32,
        num_channels=128,
        num_res_blocks=3,
        dropout=0.3,
        use_kl=True,
    ),
}

UNET_KEYS = (
    "image_size",
    "num_channels",
    "num_res_blocks",
    "num_heads",
    "num_head_channels",
    "num_heads_upsample",
    "attention_resolutions",
    "channel_mult",
    "dropout",
    "class_cond",
    "learn_sigma",
    "use_scale_shift_norm",
    "resblock_updown",
    "use_new_attention_order",
    "use_fp16",
    "in_channels",
    "out_channels",
    "num_classes",
    "attention_conv2d",
)
DIFFUSION_KEYS = (
    "diffusion_steps",
    "noise_schedule",
    "learn_sigma",
    "timestep_respacing",
    "use_kl",
    "predict_xstart",
    "rescale_timesteps",
    "rescale_learned_sigmas",
    "sigma_small",
)
SAMPLING_KEYS = ("classifier_scale",)


def _parse_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
        return value.lower() in ("true", "1", "yes")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise UserError(f"--{name}: expected True or False, got {value!r}")


def coerce_flags(flags: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Flags given as strings (``genzoo convert ... --num_channels 192``) typed like the defaults."""
    out = {}
    for name, value in flags.items():
        default = defaults.get(name)
        try:
            if isinstance(default, bool):
                value = _parse_bool(name, value)
            elif isinstance(default, int) and isinstance(value, str):
                value = int(value)
            elif isinstance(default, float) and isinstance(value, str):
                value = float(value)
        except ValueError:
            raise UserError(f"--{name}: expected a {type(default).__name__}, got {value!r}") from None
        out[name] = value
    return out


def split_flags(flags: Mapping[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(kind, network kwargs for genzoo.nets.adm, diffusion/sampling flags) from a preset's public flags."""
    kind = flags.get(
        "kind",
        "classifier"
        if any(k.startswith("classifier_") and k != "classifier_scale" for k in flags)
        else "sr"
        if "large_size" in flags
        else "unet",
    )
    if kind == "classifier":
        net = {
            k[len("classifier_") :]: v
            for k, v in flags.items()
            if k.startswith("classifier_") and k != "classifier_scale"
        }
        net["image_size"] = flags.get("image_size", 64)
        for key in ("num_classes", "in_channels", "channel_mult"):  # genzoo extensions of the public flags
            if key in flags:
                net[key] = flags[key]
        rest = {
            k: v for k, v in flags.items() if not k.startswith("classifier_") and k not in net and k != "kind"
        }
    else:
        net = {k: flags[k] for k in UNET_KEYS if k in flags}
        if kind == "sr":
            net["image_size"] = flags.get("large_size", flags.get("image_size", 256))
            net["small_size"] = flags.get("small_size", 64)
        rest = {
            k: v
            for k, v in flags.items()
            if k not in UNET_KEYS and k not in ("kind", "large_size", "small_size")
        }
        rest["learn_sigma"] = flags.get("learn_sigma", False)
    unknown = sorted(set(rest) - set(DIFFUSION_KEYS) - set(SAMPLING_KEYS) - {"use_checkpoint", "image_size"})
    if unknown:
        raise UserError(
            f"unknown flag(s) {', '.join('--' + u for u in unknown)} for an ADM {kind} checkpoint"
        )
    return kind, net, rest


def build_module(kind: str, net: Mapping[str, Any]) -> nn.Module:
    """The network for a kind and its kwargs."""
    if kind == "classifier":
        return ADMClassifier(**net)
    if kind == "sr":
        return ADMSuperRes(**net)
    if kind == "unet":
        return ADMUNet(**net)
    raise UserError(f"kind: expected unet, sr or classifier, got {kind!r}")


def _key_shapes(kind: str, net: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of a configuration, built on the meta device (no memory)."""
    with torch.device("meta"):
        module = build_module(kind, net)
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def guess_preset(state: Mapping[str, torch.Tensor]) -> str | None:
    """The first preset of either source whose parameter names and shapes equal the state dict's."""
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    for source, presets in (("guided-diffusion", GUIDED_PRESETS), ("improved-diffusion", IMPROVED_PRESETS)):
        for name, flags in presets.items():
            kind, net, _ = split_flags(flags)
            width = net.get("width", net.get("num_channels"))
            cheap = (
                shapes.get("time_embed.0.weight") == (4 * width, width)
                and ("label_emb.weight" in shapes) == bool(net.get("class_cond"))
                and ("out.2.c_proj.weight" in shapes) == (kind == "classifier")
            )
            if cheap and _preset_shapes(source, name) == shapes:  # build on meta only when cheap checks pass
                return f"--from {source} --preset {name}"
    return None


@functools.cache
def _preset_shapes(source: str, name: str) -> dict[str, tuple[int, ...]]:
    presets = GUIDED_PRESETS if source == "guided-diffusion" else IMPROVED_PRESETS
    kind, net, _ = split_flags(presets[name])
    return _key_shapes(kind, net)


_FLAG_TYPES: dict[str, Any] = {
    **GUIDED_DEFAULTS,
    **IMPROVED_DEFAULTS,
    **SR_DEFAULTS,
    **CLASSIFIER_DEFAULTS,
    "classifier_scale": 1.0,
    "num_classes": 1000,
    "in_channels": 3,
    "attention_conv2d": False,
}


def _infer_kind(flags: Mapping[str, Any]) -> str:
    if "kind" in flags:
        return flags["kind"]
    if any(k.startswith("classifier_") and k != "classifier_scale" for k in flags):
        return "classifier"
    return "sr" if "large_size" in flags else "unet"


def resolve_public_flags(defaults: Mapping[str, Any], flags: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint's complete public flags: the script defaults of its kind, overridden by ``flags``."""
    flags = coerce_flags(flags, _FLAG_TYPES)
    kind = _infer_kind(flags)
    if kind == "classifier":
        return {**CLASSIFIER_DEFAULTS, **flags, "kind": kind}
    merged = {**defaults, **flags, "kind": kind}
    if kind == "sr":
        merged.pop("image_size", None)
        merged.setdefault("large_size", 256)
        merged.setdefault("small_size", 64)
    return merged


def _check_names_and_shapes(skeleton: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """:func:`load_state_into`'s checks (and error) against a meta-device module, without loading."""
    shapes = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    if shapes != {k: tuple(v.shape) for k, v in state.items()}:
        load_state_into(skeleton, state, source)  # raises with the missing/unexpected keys and first mismatch


def _load(
    source: str, defaults: Mapping[str, Any], state: Mapping[str, torch.Tensor], **flags: Any
) -> nn.Module:
    merged = resolve_public_flags(defaults, flags)
    kind, net, _ = split_flags(merged)
    state = dict(state)
    with torch.device("meta"):  # check names and shapes before allocating a large network
        skeleton = build_module(kind, net)
    try:
        _check_names_and_shapes(skeleton, state, f"{source} checkpoint")
    except UserError as err:
        hint = guess_preset(state)
        fix = (
            f"the file fits {hint}"
            if hint
            else "no preset fits it: give the checkpoint's flags (e.g. --num_channels)"
        )
        raise UserError(f"{err}; {fix}") from None
    module = build_module(kind, net)
    load_state_into(module, state, f"{source} checkpoint")
    note_import(module, source, merged)
    return module.eval()


def _load_guided(state: Mapping[str, torch.Tensor], **flags: Any) -> nn.Module:
    return _load("guided-diffusion", GUIDED_DEFAULTS, state, **flags)


def _load_improved(state: Mapping[str, torch.Tensor], **flags: Any) -> nn.Module:
    return _load("improved-diffusion", IMPROVED_DEFAULTS, state, **flags)


def to_genzoo(
    module: nn.Module, flags: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
    """A genzoo model directory's config and weights for a loaded official module.

    Denoising UNets become family ``diffusion`` models (arch ``adm`` / ``adm-sr``, precond ``iddpm`` on
    the model's own schedule, the discrete process in ``config["discrete"]``); classifiers become family
    ``classifier`` models.
    """
    info = official_import(module)
    flags = dict(info.flags if info is not None and info.flags else flags)
    kind, net, _ = split_flags(flags)
    if kind == "classifier":
        config = {
            "family": "classifier",
            "arch": "adm-classifier",
            "net": net,
            "sampled_player": "net",
            "num_classes": module.num_classes,
            "resolution": module.resolution,
            "channels": module.in_channels,
            "discrete": discrete_config(flags),
        }
    else:
        net.pop("use_fp16", None)  # genzoo runs reduced precision by autocast, not by casting weights
        config = {
            "family": "diffusion",
            "arch": "adm-sr" if kind == "sr" else "adm",
            "precond": "iddpm",
            "net": net,
            "sampled_player": "net",
            "num_classes": module.label_dim,
            "resolution": module.resolution,
            "channels": module.in_channels,
            "discrete": discrete_config(flags),
            "source": info.source if info is not None else None,
        }
        if "classifier_scale" in flags:
            config["classifier_scale"] = flags["classifier_scale"]
    prefix = "net." if kind == "classifier" else "net.model."  # diffusion: the denoiser's network
    state = {
        prefix + k: v.detach().float() if v.is_floating_point() else v.detach()
        for k, v in module.state_dict().items()
    }
    return config, {"model": state}


def discrete_config(flags: Mapping[str, Any]) -> dict[str, Any]:
    """The discrete process of a checkpoint (genzoo.diffusion.discrete.DiscreteDiffusion.create's flags)."""
    use_kl = bool(flags.get("use_kl", False))
    return {
        "steps": int(flags.get("diffusion_steps", 1000)),
        "noise_schedule": flags.get("noise_schedule", "linear"),
        "learn_sigma": bool(flags.get("learn_sigma", False)),
        "sigma_small": bool(flags.get("sigma_small", False)),
        "predict": "x0" if flags.get("predict_xstart") else "eps",
        "loss": "kl" if use_kl else "hybrid",
        "rescale_timesteps": bool(flags.get("rescale_timesteps", False)),
        "rescale_learned_sigmas": bool(flags.get("rescale_learned_sigmas", False)),
        "respacing": str(flags.get("timestep_respacing", "") or ""),
    }


register_source(
    OfficialSource(
        name="guided-diffusion",
        load=_load_guided,
        presets=GUIDED_PRESETS,
        to_genzoo=to_genzoo,
        guess_preset=guess_preset,
    )
)
register_source(
    OfficialSource(
        name="improved-diffusion",
        load=_load_improved,
        presets=IMPROVED_PRESETS,
        to_genzoo=to_genzoo,
        guess_preset=guess_preset,
    )
)
