"""Official EDM2 checkpoints (NVlabs/edm2: ``edm2-img512-*.pkl``, ``edm2-img64-*.pkl``, training snapshots).

``load_official("edm2", "edm2-img512-s-2147483-0.130.pkl")`` reads the snapshot with the restricted reader
(:mod:`genzoo.checkpoints.nvlabs_pickle`; none of the pickle's code runs). Its ``ema`` entry — a
``Precond`` over the magnitude-preserving ``UNet`` of ``training/networks_edm2.py`` — is rebuilt from
genzoo's own modules (:class:`genzoo.nets.edm2.EDM2UNet` inside
:class:`genzoo.diffusion.precond.EDM2Denoiser`, the same ones ``--arch edm2`` trains) with the recorded
constructor arguments; every sub-module's class, the scalar attributes both sides share and every tensor
name and shape must match, else one line says what differs. The snapshot's ``encoder`` entry becomes
genzoo's :class:`~genzoo.diffusion.encoders.StandardRGBEncoder` (ImageNet-64) or
:class:`~genzoo.diffusion.encoders.StabilityVAEEncoder` (ImageNet-512 latents, decoded at sample time
with a local VAE folder: ``--vae PATH``).

Presets name the post-hoc EMA reconstructions that ``generate_images.py`` lists, with the EMA length,
guidance weight and guiding network of each published FID / FD_DINOv2 row.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from genzoo.checkpoints import OfficialSource, load_state_into, register_source
from genzoo.checkpoints.edm import _kwargs as _record_kwargs
from genzoo.checkpoints.edm import _plain, coerce_flags
from genzoo.checkpoints.nvlabs_pickle import (
    ModuleRecord,
    PersistentRecord,
    iter_records,
    read_nvlabs_pickle,
    record_state_dict,
)
from genzoo.checkpoints.record import note_import, official_import
from genzoo.diffusion.encoders import VAE_RAW_MEAN, VAE_RAW_STD, StabilityVAEEncoder, StandardRGBEncoder
from genzoo.diffusion.precond import DTYPES, EDM2Denoiser
from genzoo.errors import UserError
from genzoo.nets.edm2 import EDM2UNet

#: official class name -> genzoo class name, for the module-tree check
CLASS_NAMES = {"Precond": "EDM2Denoiser", "UNet": "EDM2UNet", "Block": "Block", "MPConv": "MPConv",
               "MPFourier": "MPFourier", "torch.nn.modules.container.ModuleDict": "ModuleDict"}
#: Precond's own arguments, in the official order, with the official defaults
PRECOND_ARGS: dict[str, Any] = dict(img_resolution=None, img_channels=None, label_dim=None, use_fp16=True,
                                    sigma_data=0.5, logvar_channels=128)
ENCODERS = ("StandardRGBEncoder", "StabilityVAEEncoder")
ENCODER_ARGS = ("vae_name", "raw_mean", "raw_std", "final_mean", "final_std", "batch_size")

# ----------------------------------------------------------------------------- presets (generate_images.py)

#: the official sampler: EDM's deterministic Heun with 32 steps (NFE 63), σ ∈ [0.002, 80], ρ 7
SAMPLING = dict(sampler="heun", steps=32)
#: model size -> model_channels (train_edm2.py config presets)
CHANNELS = dict(xxs=64, xs=128, s=192, m=256, l=320, xl=384, xxl=448)


def _preset(data: str, size: str, file: str, metric: str, value: float, guidance: float = 1.0,
            guide_file: str | None = None) -> dict[str, Any]:
    """A released reconstruction: the file, its EMA std (from the name), the published score and
    sampling settings; ``guide_file`` is the guiding network (autoguidance / an unconditional model)."""
    latent = data == "img512"
    return dict(resolution=64, img_channels=4 if latent else 3, label_dim=1000, model_channels=CHANNELS[size],
                file=file, ema_std=float(file.rsplit("-", 1)[1].removesuffix(".pkl")), metric=metric,
                published=value, guidance=guidance, guide_file=guide_file, **SAMPLING)


EDM2_PRESETS: dict[str, dict[str, Any]] = {}
for _name, _file, _metric, _value in [
    ("img512-xs-fid", "img512-xs-2147483-0.135", "fid", 3.53),
    ("img512-xs-dino", "img512-xs-2147483-0.200", "fd_dinov2", 103.39),
    ("img512-s-fid", "img512-s-2147483-0.130", "fid", 2.56),
    ("img512-s-dino", "img512-s-2147483-0.190", "fd_dinov2", 68.64),
    ("img512-m-fid", "img512-m-2147483-0.100", "fid", 2.25),
    ("img512-m-dino", "img512-m-2147483-0.155", "fd_dinov2", 58.44),
    ("img512-l-fid", "img512-l-1879048-0.085", "fid", 2.06),
    ("img512-l-dino", "img512-l-1879048-0.155", "fd_dinov2", 52.25),
    ("img512-xl-fid", "img512-xl-1342177-0.085", "fid", 1.96),
    ("img512-xl-dino", "img512-xl-1342177-0.155", "fd_dinov2", 45.96),
    ("img512-xxl-fid", "img512-xxl-0939524-0.070", "fid", 1.91),
    ("img512-xxl-dino", "img512-xxl-0939524-0.150", "fd_dinov2", 42.84),
    ("img64-s-fid", "img64-s-1073741-0.075", "fid", 1.58),
    ("img64-m-fid", "img64-m-2147483-0.060", "fid", 1.43),
    ("img64-l-fid", "img64-l-1073741-0.040", "fid", 1.33),
    ("img64-xl-fid", "img64-xl-0671088-0.040", "fid", 1.33),
]:
    EDM2_PRESETS[f"edm2-{_name}"] = _preset(_name.split("-")[0], _name.split("-")[1], f"edm2-{_file}.pkl",
                                            _metric, _value)
# Guided rows: (main file, guiding file, guidance weight). "guid" guides with an unconditional XS model
# (classifier-free guidance by a separate network); "autog" with a smaller, less trained model.
for _name, _file, _guide, _w, _metric, _value in [
    ("img512-xs-guid-fid", "img512-xs-2147483-0.045", "img512-xs-uncond-2147483-0.045", 1.40, "fid", 2.91),
    ("img512-xs-guid-dino", "img512-xs-2147483-0.150", "img512-xs-uncond-2147483-0.150", 1.70, "fd_dinov2",
     79.94),
    ("img512-s-guid-fid", "img512-s-2147483-0.025", "img512-xs-uncond-2147483-0.025", 1.40, "fid", 2.23),
    ("img512-s-guid-dino", "img512-s-2147483-0.085", "img512-xs-uncond-2147483-0.085", 1.90, "fd_dinov2",
     52.32),
    ("img512-m-guid-fid", "img512-m-2147483-0.030", "img512-xs-uncond-2147483-0.030", 1.20, "fid", 2.01),
    ("img512-m-guid-dino", "img512-m-2147483-0.015", "img512-xs-uncond-2147483-0.015", 2.00, "fd_dinov2",
     41.98),
    ("img512-l-guid-fid", "img512-l-1879048-0.015", "img512-xs-uncond-2147483-0.015", 1.20, "fid", 1.88),
    ("img512-l-guid-dino", "img512-l-1879048-0.035", "img512-xs-uncond-2147483-0.035", 1.70, "fd_dinov2",
     38.20),
    ("img512-xl-guid-fid", "img512-xl-1342177-0.020", "img512-xs-uncond-2147483-0.020", 1.20, "fid", 1.85),
    ("img512-xl-guid-dino", "img512-xl-1342177-0.030", "img512-xs-uncond-2147483-0.030", 1.70, "fd_dinov2",
     35.67),
    ("img512-xxl-guid-fid", "img512-xxl-0939524-0.015", "img512-xs-uncond-2147483-0.015", 1.20, "fid", 1.81),
    ("img512-xxl-guid-dino", "img512-xxl-0939524-0.015", "img512-xs-uncond-2147483-0.015", 1.70, "fd_dinov2",
     33.09),
    ("img512-s-autog-fid", "img512-s-2147483-0.070", "img512-xs-0134217-0.125", 2.10, "fid", 1.34),
    ("img512-s-autog-dino", "img512-s-2147483-0.120", "img512-xs-0134217-0.165", 2.45, "fd_dinov2", 36.67),
    ("img512-xxl-autog-fid", "img512-xxl-0939524-0.075", "img512-m-0268435-0.155", 2.05, "fid", 1.25),
    ("img512-xxl-autog-dino", "img512-xxl-0939524-0.130", "img512-m-0268435-0.205", 2.30, "fd_dinov2", 24.18),
    ("img512-s-uncond-autog-fid", "img512-s-uncond-2147483-0.070", "img512-xs-uncond-0134217-0.110", 2.85,
     "fid", 3.86),
    ("img512-s-uncond-autog-dino", "img512-s-uncond-2147483-0.090", "img512-xs-uncond-0134217-0.125", 2.90,
     "fd_dinov2", 90.39),
    ("img64-s-autog-fid", "img64-s-1073741-0.045", "img64-xs-0134217-0.110", 1.70, "fid", 1.01),
    ("img64-s-autog-dino", "img64-s-1073741-0.105", "img64-xs-0134217-0.175", 2.20, "fd_dinov2", 31.85),
]:
    EDM2_PRESETS[f"edm2-{_name}"] = _preset(_name.split("-")[0], _name.split("-")[1], f"edm2-{_file}.pkl",
                                            _metric, _value, _w, f"edm2-{_guide}.pkl")
    if "-uncond-" in _name:
        EDM2_PRESETS[f"edm2-{_name}"]["label_dim"] = 0
del _name, _file, _guide, _w, _metric, _value

#: flags of this source (preset keys and the user's): name -> type; informational ones are not checked
_FLAG_TYPES: dict[str, type] = dict(resolution=int, img_channels=int, label_dim=int, model_channels=int,
                                    sampler=str, steps=int, key=str, vae=str, dtype=str, file=str,
                                    ema_std=float, metric=str, published=float, guidance=float,
                                    guide_file=str)
_EXPECTED = ("resolution", "img_channels", "label_dim", "model_channels")
_SAMPLE_KEYS = ("sampler", "steps")

# ----------------------------------------------------------------------------- reading the records


def accepts(snapshot: Any) -> bool:
    """Whether a snapshot's ``ema`` is EDM2's ``Precond``."""
    ema = snapshot.get("ema") if isinstance(snapshot, Mapping) else None
    return isinstance(ema, PersistentRecord) and ema.class_name == "Precond"


def _class_name(record: PersistentRecord | ModuleRecord) -> str:
    return record.class_name if isinstance(record, PersistentRecord) else record.type_name


def check_module_tree(record: PersistentRecord, module: nn.Module, what: str) -> None:
    """The recorded module tree must be genzoo's: same paths, classes and shared scalar attributes."""
    modules = dict(module.named_modules())
    for path, rec in iter_records(record):
        ours = modules.pop(path, None)
        found = _class_name(rec)
        if ours is None:
            raise UserError(f"{what}: the file has a sub-module {path!r} ({found}) that genzoo's EDM2 "
                            "network with these arguments does not")
        if CLASS_NAMES.get(found) != type(ours).__name__:
            raise UserError(f"{what}: sub-module {path or '<top>'} is {found} in the file, "
                            f"{type(ours).__name__} in genzoo")
        for attr, value in rec.attributes.items():
            mine = getattr(ours, attr, None)
            if isinstance(value, (bool, int, float, np.generic)) and isinstance(mine, (bool, int, float)):
                same = math.isclose(float(value), float(mine), rel_tol=1e-12, abs_tol=0.0)
            elif isinstance(value, (str, list, tuple)) and isinstance(mine, (str, list, tuple)):
                same = _plain(value) == _plain(mine)
            else:
                continue
            if not same:
                raise UserError(f"{what}: {path or '<top>'}.{attr} is {_plain(value)} in the file, "
                                f"{_plain(mine)} in genzoo (stored code that genzoo does not reproduce)")
    if modules:
        raise UserError(f"{what}: genzoo's network has sub-modules the file lacks: "
                        f"{', '.join(sorted(modules)[:5])}")


def build_encoder_from_record(record: Any, vae: str | None, what: str) -> StandardRGBEncoder:
    """genzoo's encoder for the snapshot's ``encoder`` entry (None: EDM2's default, StandardRGBEncoder)."""
    if record is None:
        encoder: StandardRGBEncoder = StandardRGBEncoder()
    elif not isinstance(record, PersistentRecord) or record.class_name not in ENCODERS:
        found = getattr(record, "class_name", type(record).__name__)
        raise UserError(f"{what}: the snapshot's 'encoder' is {found}, not one of {', '.join(ENCODERS)}")
    elif record.class_name == "StandardRGBEncoder":
        if record.init_args or record.init_kwargs:
            raise UserError(f"{what}: StandardRGBEncoder with arguments "
                            f"{record.init_kwargs or record.init_args}")
        encoder = StandardRGBEncoder()
    else:
        kwargs = _record_kwargs(record, ENCODER_ARGS)
        kwargs.setdefault("vae_name", record.attributes.get("vae_name", "stabilityai/sd-vae-ft-mse"))
        encoder = StabilityVAEEncoder(vae_path=vae, raw_mean=kwargs.get("raw_mean", VAE_RAW_MEAN),
                                      raw_std=kwargs.get("raw_std", VAE_RAW_STD),
                                      final_mean=kwargs.get("final_mean", 0.0),
                                      final_std=kwargs.get("final_std", 0.5),
                                      batch_size=int(kwargs.get("batch_size", 8)),
                                      vae_name=str(kwargs["vae_name"]))
        for name in ("scale", "bias"):  # what the official constructor computed must be what genzoo computes
            stored = record.attributes.get(name)
            if stored is not None and not np.array_equal(np.asarray(stored, dtype=np.float32).reshape(-1),
                                                          getattr(encoder, name).numpy().reshape(-1)):
                raise UserError(f"{what}: StabilityVAEEncoder.{name} is {_plain(stored)} in the file, "
                                f"{getattr(encoder, name).tolist()} from its recorded arguments")
    if vae and not getattr(encoder, "latent", False):
        raise UserError(f"--vae {vae}: this EDM2 model works in pixel space; it takes no VAE")
    return encoder


# ----------------------------------------------------------------------------- loading


def load_edm2(snapshot: Mapping[str, Any], **flags: Any) -> EDM2Denoiser:
    """A genzoo denoiser (with ``encoder`` attached) from an EDM2 snapshot read by ``read_nvlabs_pickle``.

    ``flags``: ``key`` (the snapshot entry, default ``ema``), ``vae`` (a local VAE folder recorded for
    sampling latent models), ``dtype`` (``auto`` = the file's ``use_fp16``: float16 on CUDA only, or
    ``float32``/``float16``/``bfloat16``), ``sampler`` / ``steps`` (kept as sampling defaults), and a preset's
    expectations (``resolution``, ``img_channels``, ``label_dim``, ``model_channels``) that the file must
    meet; the preset's published settings (``ema_std``, ``guidance``, ``guide_file``, ...) are recorded.
    """
    if isinstance(snapshot, (str, bytes)) or not isinstance(snapshot, Mapping):
        raise UserError("edm2: expected a network snapshot read by genzoo.checkpoints.nvlabs_pickle")
    flags = coerce_flags(flags, _FLAG_TYPES, "EDM2 checkpoints")
    key = flags.pop("key", None) or "ema"
    what = f"EDM2 snapshot {key!r}"
    if key not in snapshot:
        raise UserError(f"{what}: no {key!r} entry in the snapshot (found: {', '.join(map(str, snapshot))})")
    record = snapshot[key]
    if not isinstance(record, PersistentRecord) or record.class_name != "Precond":
        found = _class_name(record) if isinstance(record, (PersistentRecord, ModuleRecord)) else type(record)
        raise UserError(f"{what}: expected EDM2's Precond, found {getattr(found, '__name__', found)}")
    unet_names = tuple(inspect.signature(EDM2UNet).parameters)
    kwargs = _record_kwargs(record, tuple(PRECOND_ARGS))
    precond = {k: kwargs.pop(k, default) for k, default in PRECOND_ARGS.items()}
    unknown = sorted(set(kwargs) - set(unet_names))
    if unknown:
        raise UserError(f"{what}: UNet argument(s) {', '.join(unknown)} that genzoo does not know")
    if any(precond[k] is None for k in ("img_resolution", "img_channels", "label_dim")):
        raise UserError(f"{what}: Precond was recorded without img_resolution, img_channels and label_dim")
    net_kwargs = dict(img_resolution=int(precond["img_resolution"]),
                      img_channels=int(precond["img_channels"]), label_dim=int(precond["label_dim"]),
                      **kwargs)
    found = dict(resolution=net_kwargs["img_resolution"], img_channels=net_kwargs["img_channels"],
                 label_dim=net_kwargs["label_dim"], model_channels=int(kwargs.get("model_channels", 192)))
    for name in _EXPECTED:
        expected = flags.pop(name, None)
        if expected is not None and expected != found[name]:
            raise UserError(f"{what}: the file has {name} {found[name]!r}, the preset expects {expected!r} "
                            "(another file, or another --preset)")

    net = EDM2UNet(**net_kwargs)
    precond_kwargs = dict(sigma_data=float(precond["sigma_data"]),
                          logvar_channels=int(precond["logvar_channels"]))
    denoiser = EDM2Denoiser(net, use_fp16=bool(precond["use_fp16"]), **precond_kwargs)
    dtype = flags.pop("dtype", None) or "auto"
    if dtype != "auto" and dtype not in DTYPES:
        raise UserError(f"--dtype: expected auto, {', '.join(DTYPES)}, got {dtype!r}")
    denoiser.net_dtype = DTYPES.get(dtype)
    check_module_tree(record, denoiser, what)
    load_state_into(denoiser, record_state_dict(record), what)
    denoiser.encoder = build_encoder_from_record(snapshot.get("encoder"), flags.pop("vae", None), what)

    sampling = dict(SAMPLING, **{k: flags[k] for k in _SAMPLE_KEYS if flags.get(k) is not None})
    note_import(denoiser, "edm2", dict(net=_plain(net_kwargs), precond_kwargs=precond_kwargs,
                                       sampling=sampling, use_fp16=bool(precond["use_fp16"]), dtype=dtype,
                                       published={k: v for k, v in flags.items() if k not in _SAMPLE_KEYS},
                                       module_src_sha256=record.module_src_sha256))
    return denoiser.eval()


def to_genzoo(module: nn.Module, flags: Mapping[str, Any]
              ) -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
    """A genzoo model directory (family ``diffusion``, arch ``edm2``) for a loaded EDM2 denoiser."""
    info = official_import(module).flags
    config = {
        "family": "diffusion",
        "arch": "edm2",
        "net": info["net"],
        "precond": "edm2",
        "precond_kwargs": info["precond_kwargs"],
        "sampled_player": "net",
        "num_classes": int(info["net"]["label_dim"]),
        "resolution": int(info["net"]["img_resolution"]),
        "channels": int(info["net"]["img_channels"]),
        "encoder": module.encoder.config(),
        "fp16_on_cuda": info["use_fp16"],
        "sampling_defaults": info["sampling"],
        "published": info["published"],
        "source": "edm2",
        "official_class": "Precond(UNet)",
    }
    if info["dtype"] != "auto":
        config["net_dtype"] = info["dtype"]
    state = {f"net.{k}": v.detach() for k, v in module.state_dict().items()}
    return config, {"model": state}


register_source(
    OfficialSource(
        name="edm2",
        load=load_edm2,
        presets=EDM2_PRESETS,
        to_genzoo=to_genzoo,
        read=read_nvlabs_pickle,
        accepts=accepts,
    )
)
