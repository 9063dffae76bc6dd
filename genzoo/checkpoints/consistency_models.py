"""Official checkpoints of openai/consistency_models: the released ImageNet-64 and LSUN-256 models.

They are guided-diffusion ADM UNets (``genzoo.nets.adm``) with 1×1 Conv2d attention projections
(``qkv`` [3C, C, 1, 1], ``proj_out`` [C, C, 1, 1]) in the (3, heads, d) channel order, no learned
variance, fed the time input 250·ln σ; the consistency function is
f(x, σ) = c_skip(σ)·x + c_out(σ)·F(c_in(σ)·x, 250·ln σ) with σ_min 0.002, σ_max 80, σ_d 0.5.
``load_official("consistency-models", path, preset=...)`` returns that f as a
:class:`~genzoo.consistency.ConsistencyModel`; ``genzoo convert --from consistency-models`` writes a
genzoo ``consistency`` model directory.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from genzoo.checkpoints import OfficialSource, load_state_into, register_source
from genzoo.checkpoints.guided_diffusion import GUIDED_DEFAULTS, UNET_KEYS, coerce_flags
from genzoo.checkpoints.record import note_import, official_import
from genzoo.consistency.model import SIGMA_DATA, SIGMA_MAX, SIGMA_MIN, ConsistencyModel
from genzoo.errors import UserError
from genzoo.nets.adm import ADMUNet

#: time input of the released networks: 1000·¼·ln σ
TIME_SCALE = 250.0

# cm_train.py / image_sample.py defaults that the launch scripts' flags override
CM_DEFAULTS: dict[str, Any] = dict(
    GUIDED_DEFAULTS, attention_resolutions="32,16,8", learn_sigma=False, sigma_min=SIGMA_MIN,
    sigma_max=SIGMA_MAX, sigma_data=SIGMA_DATA, num_scales=40)
CM_DEFAULTS = {k: v for k, v in CM_DEFAULTS.items() if k in UNET_KEYS or k in (
    "learn_sigma", "sigma_min", "sigma_max", "sigma_data", "num_scales")}

_IMAGENET64 = dict(CM_DEFAULTS, image_size=64, num_channels=192, num_res_blocks=3, num_head_channels=64,
                   class_cond=True, resblock_updown=True, use_scale_shift_norm=True, dropout=0.0,
                   use_fp16=True)
_LSUN256 = dict(CM_DEFAULTS, image_size=256, num_channels=256, num_res_blocks=2, num_head_channels=64,
                class_cond=False, resblock_updown=True, use_scale_shift_norm=False, dropout=0.0,
                use_fp16=True)

# num_scales: the grid the released two-step schedules index (CD: 40; CT: its final N, 201 / 151);
# ts: those schedules, kept as a hint for `genzoo sample --ts`.
PRESETS: dict[str, dict[str, Any]] = {
    "imagenet64": dict(_IMAGENET64),
    "lsun256": dict(_LSUN256),
    "cd_imagenet64_l2": dict(_IMAGENET64, num_scales=40, ts="0,22,39"),
    "cd_imagenet64_lpips": dict(_IMAGENET64, num_scales=40, ts="0,22,39"),
    "ct_imagenet64": dict(_IMAGENET64, num_scales=201, ts="0,106,200"),
    **{f"cd_{name}256_{d}": dict(_LSUN256, num_scales=40, ts="0,17,39")
       for name in ("bedroom", "cat") for d in ("l2", "lpips")},
    **{f"ct_{name}256": dict(_LSUN256, num_scales=151, ts="0,67,150") for name in ("bedroom", "cat")},
}
CM_KEYS = ("sigma_min", "sigma_max", "sigma_data", "num_scales", "ts")


def network_kwargs(flags: Mapping[str, Any]) -> dict[str, Any]:
    """genzoo ``adm`` kwargs of a released configuration: Conv2d attention in the (3, heads, d) order."""
    net = {k: flags[k] for k in UNET_KEYS if k in flags}
    net.update(attention_conv2d=True, use_new_attention_order=True,
               learn_sigma=bool(flags.get("learn_sigma")))
    net.pop("use_fp16", None)  # genzoo runs reduced precision by autocast, not by casting weights
    return net


def _resolve(flags: Mapping[str, Any]) -> dict[str, Any]:
    types = {**CM_DEFAULTS, "num_classes": 1000, "in_channels": 3, "ts": ""}
    unknown = sorted(set(flags) - set(types) - set(UNET_KEYS))
    if unknown:
        raise UserError(f"unknown flag(s) {', '.join('--' + u for u in unknown)} for a consistency-models "
                        f"checkpoint; valid: {', '.join(sorted(types))}")
    return {**CM_DEFAULTS, **coerce_flags(flags, types)}


def guess_preset(state: Mapping[str, torch.Tensor]) -> str | None:
    """The first preset whose parameter names and shapes equal the state dict's."""
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    for name in ("imagenet64", "lsun256"):
        with torch.device("meta"):
            module = ADMUNet(**network_kwargs(PRESETS[name]))
        if {k: tuple(v.shape) for k, v in module.state_dict().items()} == shapes:
            return f"--preset {name}"
    return None


def load(state: Mapping[str, torch.Tensor], **flags: Any) -> ConsistencyModel:
    """The consistency function of a released checkpoint (a state dict of ``consistency_models``' UNet)."""
    merged = _resolve(flags)
    state = dict(state)
    with torch.device("meta"):  # check names and shapes before allocating a large network
        probe = ADMUNet(**network_kwargs(merged))
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    fits = {k: tuple(v.shape) for k, v in probe.state_dict().items()} == shapes
    net = ADMUNet(**network_kwargs(merged)) if fits else probe
    try:
        load_state_into(net, state, "consistency-models checkpoint")
    except UserError as err:
        hint = guess_preset(state)
        fix = f"the file fits {hint}" if hint else "no preset fits it: give its flags (e.g. --num_channels)"
        raise UserError(f"{err}; {fix}") from None
    model = ConsistencyModel(net, sigma_min=merged["sigma_min"], sigma_max=merged["sigma_max"],
                             sigma_data=merged["sigma_data"], time_scale=TIME_SCALE)
    note_import(model, "consistency-models", merged)
    return model.eval()


def to_genzoo(module: nn.Module, flags: Mapping[str, Any]
              ) -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
    """config.json and weights of a genzoo ``consistency`` model directory."""
    info = official_import(module)
    flags = dict(info.flags if info is not None and info.flags else _resolve(flags))
    net = module.model
    config = {"family": "consistency", "arch": "adm", "net": network_kwargs(flags), "sampled_player": "net",
              "num_classes": net.label_dim, "resolution": net.resolution, "channels": net.in_channels,
              "time_scale": TIME_SCALE, "source": "consistency-models",
              **{k: flags[k] for k in CM_KEYS if flags.get(k) not in (None, "")}}
    state = {f"net.{k}": v.detach().float() if v.is_floating_point() else v.detach()
             for k, v in module.state_dict().items()}
    return config, {"model": state}


register_source(OfficialSource(name="consistency-models", load=load, presets=PRESETS, to_genzoo=to_genzoo,
                               guess_preset=guess_preset))
