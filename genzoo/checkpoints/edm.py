"""Official EDM checkpoints (NVlabs/edm: ``edm-*.pkl``, ``baseline-*.pkl``, ``network-snapshot-*.pkl``).

``load_official("edm", "edm-cifar10-32x32-cond-vp.pkl")`` reads the snapshot with the restricted reader
(:mod:`genzoo.checkpoints.nvlabs_pickle`; none of the pickle's code runs), takes its ``ema`` record — a
``VPPrecond``, ``VEPrecond``, ``iDDPMPrecond`` or ``EDMPrecond`` over a ``SongUNet`` or ``DhariwalUNet`` —
and rebuilds it from genzoo's own modules: :mod:`genzoo.nets.edm` for the network, with the recorded
constructor arguments, and :mod:`genzoo.diffusion.precond` for the preconditioning. Every sub-module's
recorded class, every scalar attribute both sides share (eps, group counts, skip scales, ...) and every
tensor name and shape must match genzoo's module tree, else one line says what differs.

The result is a genzoo denoiser ``model(x, sigma, class_labels)`` with EDM's semantics; class labels
may be one-hot rows or int indices. ``use_fp16`` is honoured as EDM does (float16 on CUDA only), or
overridden with ``dtype="float32" | "float16" | "bfloat16"``. Presets name the released files with the
README's sampler settings, which ``genzoo sample`` uses by default for a converted model.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from genzoo.checkpoints import OfficialSource, load_state_into, register_source
from genzoo.checkpoints.nvlabs_pickle import (
    ModuleRecord,
    PersistentRecord,
    iter_records,
    read_nvlabs_pickle,
    record_state_dict,
)
from genzoo.checkpoints.record import note_import, official_import
from genzoo.diffusion.precond import DTYPES, Denoiser, build_denoiser
from genzoo.errors import UserError
from genzoo.nets.edm import DhariwalUNet, SongUNet

#: official network class -> (genzoo class, registry name)
NETWORKS: dict[str, tuple[type[nn.Module], str]] = {
    "SongUNet": (SongUNet, "songunet"),
    "DhariwalUNet": (DhariwalUNet, "dhariwalunet"),
}

#: official preconditioning class -> (genzoo precond name, its own arguments after the common four, in the
#: official order, with defaults, default model_type, output channels per image channel)
PRECONDS: dict[str, tuple[str, dict[str, Any], str, int]] = {
    "VPPrecond": ("vp", dict(beta_d=19.9, beta_min=0.1, M=1000, epsilon_t=1e-5), "SongUNet", 1),
    "VEPrecond": ("ve", dict(sigma_min=0.02, sigma_max=100.0), "SongUNet", 1),
    "iDDPMPrecond": ("iddpm", dict(C_1=0.001, C_2=0.008, M=1000), "DhariwalUNet", 2),
    "EDMPrecond": ("edm", dict(sigma_min=0.0, sigma_max=float("inf"), sigma_data=0.5), "DhariwalUNet", 1),
}
COMMON_ARGS = ("img_resolution", "img_channels", "label_dim", "use_fp16")

# ----------------------------------------------------------------------------- presets (README of NVlabs/edm)

#: the README's recommended sampler settings: deterministic Heun, 18 steps at 32 px (NFE 35), 40 at 64 px
#: (NFE 79); ImageNet-64 stochastic with 256 steps (NFE 511)
SAMPLING_32 = dict(sampler="heun", steps=18)
SAMPLING_64 = dict(sampler="heun", steps=40)
SAMPLING_IMAGENET = dict(sampler="heun", steps=256, churn=40.0, s_min=0.05, s_max=50.0, s_noise=1.003)
SAMPLE_KEYS = ("sampler", "steps", "churn", "s_min", "s_max", "s_noise", "sigma_min", "sigma_max", "rho")


def _preset(resolution: int, label_dim: int, precond: str, model_type: str, arch: str,
            sampling: dict[str, Any]) -> dict[str, Any]:
    return dict(resolution=resolution, label_dim=label_dim, precond=precond, model_type=model_type, arch=arch,
                **sampling)


EDM_PRESETS: dict[str, dict[str, Any]] = {}
for _prefix in ("edm", "baseline"):
    for _labels, _cond in ((10, "cond"), (0, "uncond")):
        EDM_PRESETS[f"{_prefix}-cifar10-32x32-{_cond}-vp"] = _preset(32, _labels, "VPPrecond", "SongUNet",
                                                                     "ddpmpp", SAMPLING_32)
        EDM_PRESETS[f"{_prefix}-cifar10-32x32-{_cond}-ve"] = _preset(32, _labels, "VEPrecond", "SongUNet",
                                                                     "ncsnpp", SAMPLING_32)
    for _data in ("ffhq", "afhqv2"):
        EDM_PRESETS[f"{_prefix}-{_data}-64x64-uncond-vp"] = _preset(64, 0, "VPPrecond", "SongUNet", "ddpmpp",
                                                                    SAMPLING_64)
        EDM_PRESETS[f"{_prefix}-{_data}-64x64-uncond-ve"] = _preset(64, 0, "VEPrecond", "SongUNet", "ncsnpp",
                                                                    SAMPLING_64)
EDM_PRESETS["edm-imagenet-64x64-cond-adm"] = _preset(64, 1000, "EDMPrecond", "DhariwalUNet", "adm",
                                                     SAMPLING_IMAGENET)
# ADM's own ImageNet-64 model (Dhariwal & Nichol) under iDDPM preconditioning; the README's ImageNet
# stochastic settings (the paper tunes S_churn per model in its appendix).
EDM_PRESETS["baseline-imagenet-64x64-cond-adm"] = _preset(64, 1000, "iDDPMPrecond", "DhariwalUNet", "adm",
                                                          SAMPLING_IMAGENET)
del _prefix, _labels, _cond, _data

_FLAG_TYPES: dict[str, type] = dict(resolution=int, label_dim=int, precond=str, model_type=str, arch=str,
                                    sampler=str, steps=int, churn=float, s_min=float, s_max=float,
                                    s_noise=float, sigma_min=float, sigma_max=float, rho=float, dtype=str,
                                    key=str)


def default_sampling(resolution: int, label_dim: int) -> dict[str, Any]:
    """The README's settings for a file without a preset: ImageNet-style stochastic for 1000 classes,
    18 steps at ≤ 32 px, else 40."""
    if label_dim == 1000:
        return dict(SAMPLING_IMAGENET)
    return dict(SAMPLING_32 if resolution <= 32 else SAMPLING_64)


# ----------------------------------------------------------------------------- reading the records


def _plain(value: Any) -> Any:
    """JSON-able Python values from recorded ones (numpy scalars, tuples)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _kwargs(record: PersistentRecord, names: tuple[str, ...]) -> dict[str, Any]:
    """A record's constructor arguments by name (positional ones mapped through the official order)."""
    if len(record.init_args) > len(names):
        raise UserError(f"{record.class_name}: {len(record.init_args)} positional constructor arguments, "
                        f"expected at most {len(names)}")
    kwargs = dict(zip(names, record.init_args, strict=False))
    for name, value in record.init_kwargs.items():
        if name in kwargs:
            raise UserError(f"{record.class_name}: argument {name!r} given twice")
        kwargs[name] = value
    return {k: _plain(v) for k, v in kwargs.items()}


def snapshot_record(snapshot: Mapping[str, Any], key: str, what: str) -> PersistentRecord:
    if key not in snapshot:
        raise UserError(f"{what}: no {key!r} entry in the snapshot (found: {', '.join(map(str, snapshot))})")
    record = snapshot[key]
    if not isinstance(record, PersistentRecord):
        raise UserError(f"{what}: the snapshot's {key!r} is {type(record).__name__}, not a network")
    return record


def accepts(snapshot: Any) -> bool:
    """Whether a snapshot's ``ema`` is one of EDM's preconditioned networks."""
    ema = snapshot.get("ema") if isinstance(snapshot, Mapping) else None
    return isinstance(ema, PersistentRecord) and ema.class_name in PRECONDS


def _check_tree(record: PersistentRecord, net: nn.Module, what: str) -> None:
    """The recorded module tree must be genzoo's: same paths, classes and shared scalar attributes."""
    modules = dict(net.named_modules())
    seen = set()
    for path, rec in iter_records(record):
        module = modules.get(path)
        if module is None:
            raise UserError(f"{what}: the file has a sub-module {path!r} ({_name(rec)}) that genzoo's "
                            f"{type(net).__name__} with these arguments does not")
        seen.add(path)
        expected = type(module).__name__
        if _name(rec).rsplit(".", 1)[-1] != expected:
            raise UserError(f"{what}: sub-module {path or '<top>'} is {_name(rec)} in the file, "
                            f"{expected} in genzoo")
        for attr, value in rec.attributes.items():
            ours = getattr(module, attr, None)
            if isinstance(value, (bool, int, float, np.generic)) and isinstance(ours, (bool, int, float)):
                if not math.isclose(float(value), float(ours), rel_tol=1e-12, abs_tol=0.0):
                    raise UserError(f"{what}: {path or '<top>'}.{attr} is {value} in the file, {ours} in "
                                    "genzoo (stored code that genzoo does not reproduce)")
    missing = sorted(set(modules) - seen)
    if missing:
        raise UserError(f"{what}: genzoo's network has sub-modules the file lacks: {', '.join(missing[:5])}")


def _name(record: PersistentRecord | ModuleRecord) -> str:
    return record.class_name if isinstance(record, PersistentRecord) else record.type_name


# ----------------------------------------------------------------------------- loading


def coerce_flags(flags: Mapping[str, Any], types: Mapping[str, Callable[[Any], Any]],
                 what: str) -> dict[str, Any]:
    """``flags`` converted by ``types`` (name -> converter); an unknown name or a bad value is a one-line
    error naming the flag and ``what`` takes it (e.g. "EDM checkpoints")."""
    out = {}
    for name, value in flags.items():
        if name not in types:
            raise UserError(f"--{name}: not a flag of {what} (valid: {', '.join(sorted(types))})")
        kind = types[name]
        try:
            out[name] = kind(value) if value is not None else None
        except (TypeError, ValueError):
            raise UserError(f"--{name}: expected a {kind.__name__}, got {value!r}") from None
    return out


def load_edm(snapshot: Mapping[str, Any], **flags: Any) -> Denoiser:
    """A genzoo denoiser from an EDM snapshot read by :func:`read_nvlabs_pickle`.

    ``flags``: ``key`` (the snapshot entry, default ``ema``), ``dtype`` (``auto`` = EDM's ``use_fp16``
    behaviour, or ``float32``/``float16``/``bfloat16``), the sampler settings kept for ``genzoo sample``
    (``steps``, ``churn``, ``s_min``, ``s_max``, ``s_noise``, ...), and a preset's expectations
    (``resolution``, ``label_dim``, ``precond``, ``model_type``), which the file must meet.
    """
    if isinstance(snapshot, (str, bytes)) or not isinstance(snapshot, Mapping):
        raise UserError("edm: expected a network snapshot read by genzoo.checkpoints.nvlabs_pickle")
    flags = coerce_flags(flags, _FLAG_TYPES, "EDM checkpoints")
    key = flags.pop("key", None) or "ema"
    what = f"EDM snapshot {key!r}"
    record = snapshot_record(snapshot, key, what)
    if record.class_name not in PRECONDS:
        raise UserError(f"{what}: class {record.class_name!r} is not one of EDM's preconditionings "
                        f"({', '.join(PRECONDS)})")
    precond, own_defaults, default_model, out_per_channel = PRECONDS[record.class_name]
    kwargs = _kwargs(record, COMMON_ARGS + tuple(own_defaults) + ("model_type",))
    model_type = kwargs.pop("model_type", default_model)
    resolution, channels = int(kwargs.pop("img_resolution")), int(kwargs.pop("img_channels"))
    label_dim, use_fp16 = int(kwargs.pop("label_dim", 0)), bool(kwargs.pop("use_fp16", False))
    precond_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in own_defaults}
    _check_expectations(flags, resolution=resolution, label_dim=label_dim, precond=record.class_name,
                        model_type=model_type, arch=paper_arch(model_type, kwargs), what=what)

    if model_type not in NETWORKS:
        raise UserError(f"{what}: model_type {model_type!r} is not one of EDM's networks "
                        f"({', '.join(NETWORKS)})")
    model_record = record.modules.get("model")
    if not isinstance(model_record, PersistentRecord) or model_record.class_name != model_type:
        found = _name(model_record) if model_record is not None else "nothing"
        raise UserError(f"{what}: its 'model' is {found}, expected {model_type}")
    net_cls, arch = NETWORKS[model_type]
    net_kwargs = dict(img_resolution=resolution, in_channels=channels,
                      out_channels=channels * out_per_channel, label_dim=label_dim, **kwargs)
    signature = inspect.signature(net_cls).parameters
    recorded = _kwargs(model_record, tuple(signature))
    if recorded:  # the network's own record (arguments as passed; defaults fill the rest on both sides)
        defaults = {k: _plain(p.default) for k, p in signature.items() if p.default is not p.empty}
        theirs, ours = {**defaults, **recorded}, {**defaults, **net_kwargs}
        diff = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
    if recorded and diff:
        raise UserError(f"{what}: the network's recorded arguments differ from the preconditioning's "
                        f"({', '.join(diff)})")
    unknown = sorted(set(net_kwargs) - set(inspect.signature(net_cls).parameters))
    if unknown:
        raise UserError(f"{what}: {model_type} argument(s) {', '.join(unknown)} that genzoo does not know")
    net = net_cls(**net_kwargs)
    _check_tree(model_record, net, what)
    load_state_into(net, record_state_dict(model_record), what)

    stored_grid = precond == "iddpm"
    if stored_grid:
        precond_kwargs["stored_grid"] = True
    denoiser = build_denoiser(precond, net, **precond_kwargs)
    if stored_grid:  # EDM's float32 grid, exactly as stored
        load_state_into(denoiser, {**{f"model.{k}": v for k, v in net.state_dict().items()},
                                   "u": _buffer(record, "u", what)}, what)
    for name in ("sigma_min", "sigma_max"):  # as the official object computed them (VP: in float32)
        if isinstance(record.attributes.get(name), (int, float, np.generic)):
            setattr(denoiser, name, float(record.attributes[name]))
    dtype = flags.pop("dtype", None) or "auto"
    if dtype != "auto" and dtype not in DTYPES:
        raise UserError(f"--dtype: expected auto, {', '.join(DTYPES)}, got {dtype!r}")
    denoiser.fp16_on_cuda = use_fp16
    denoiser.net_dtype = DTYPES.get(dtype)

    sampling = default_sampling(resolution, label_dim)
    sampling.update({k: v for k, v in flags.items() if k in SAMPLE_KEYS and v is not None})
    note_import(denoiser, "edm", dict(
        class_name=record.class_name, model_type=model_type, arch=arch, net=_plain(net_kwargs),
        precond=precond,
        precond_kwargs=_plain(precond_kwargs),
        sigma_min=denoiser.sigma_min, sigma_max=denoiser.sigma_max, use_fp16=use_fp16, dtype=dtype,
        sampling=sampling, module_src_sha256=record.module_src_sha256))
    return denoiser.eval()


def _buffer(record: PersistentRecord, name: str, what: str) -> torch.Tensor:
    if name not in record.buffers:
        raise UserError(f"{what}: {record.class_name} has no {name!r} buffer")
    return record.buffers[name]


def _check_expectations(flags: dict[str, Any], what: str, **found: Any) -> None:
    """A preset's (or the user's) expectations about the file: each must equal what the file holds."""
    for name, value in found.items():
        expected = flags.pop(name, None)
        if expected is not None and expected != value:
            raise UserError(f"{what}: the file has {name} {value!r}, the preset expects {expected!r} "
                            "(another file, or another --preset)")


def paper_arch(model_type: str, net_kwargs: Mapping[str, Any]) -> str:
    """EDM's name of the architecture (train.py's --arch): ddpmpp, ncsnpp or adm."""
    if model_type == "DhariwalUNet":
        return "adm"
    return "ncsnpp" if net_kwargs.get("embedding_type") == "fourier" else "ddpmpp"


def to_genzoo(module: nn.Module, flags: Mapping[str, Any]
              ) -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
    """A genzoo model directory (family ``diffusion``) for a loaded EDM denoiser."""
    info = official_import(module).flags
    config = {
        "family": "diffusion",
        "arch": info["arch"],
        "net": info["net"],
        "precond": info["precond"],
        # JSON has no infinity: an unbounded σ range (EDMPrecond's default) is the genzoo default too
        "precond_kwargs": {k: v for k, v in info["precond_kwargs"].items() if _finite(v)},
        "sampled_player": "net",
        "num_classes": int(info["net"]["label_dim"]),
        "resolution": int(info["net"]["img_resolution"]),
        "channels": int(info["net"]["in_channels"]),
        "sigma_min": info["sigma_min"] if _finite(info["sigma_min"]) else None,
        "sigma_max": info["sigma_max"] if _finite(info["sigma_max"]) else None,
        "fp16_on_cuda": bool(info["use_fp16"]),
        "sampling_defaults": info["sampling"],
        "source": "edm",
        "official_class": f"{info['class_name']}({info['model_type']})",
    }
    if info["dtype"] != "auto":
        config["net_dtype"] = info["dtype"]
    state = {f"net.{k}": v.detach() for k, v in module.state_dict().items()}
    return config, {"model": state}


def _finite(value: Any) -> bool:
    return not isinstance(value, float) or math.isfinite(value)


register_source(
    OfficialSource(
        name="edm",
        load=load_edm,
        presets=EDM_PRESETS,
        to_genzoo=to_genzoo,
        read=read_nvlabs_pickle,
        accepts=accepts,
    )
)
