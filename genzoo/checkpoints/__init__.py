"""Checkpoints on disk, and importers of the official released formats.

A genzoo model directory holds ``config.json`` (plain data: family, network name and config, ...),
``model.safetensors`` and optionally ``ema.safetensors``; a training checkpoint adds
``optimizer.pt`` and ``state.json``. A run directory holds ``checkpoint-NNNNNN/`` directories.

Official formats are read by source modules in this package (``load_official``), never by
unpickling code: ``torch.load(weights_only=True)``, safetensors, or, for NVlabs network-snapshot
pickles (EDM, EDM2), the restricted reader :mod:`genzoo.checkpoints.nvlabs_pickle` (a source sets
``read`` and ``accepts``; :func:`source_for_pickle` picks the source of a ``.pkl``).
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from genzoo.checkpoints.record import note_import, official_import
from genzoo.errors import UserError

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


# ----------------------------------------------------------------------------- files


def read_json(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None


def write_json_atomic(path: str | Path, data: Mapping[str, Any]) -> None:
    """Write JSON through a uniquely named temporary renamed into place (see :mod:`genzoo.io.atomic`)."""
    from genzoo.io.atomic import atomic_output

    with atomic_output(path, "file") as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def load_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` file, with an error naming it if it is missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such weights file")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"{path}: corrupt or truncated safetensors file ({err})") from None


def load_torch_file(path: str | Path) -> Any:
    """``torch.load`` with ``weights_only=True``: tensors and plain containers, never code."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for corrupt or unsafe files
        raise UserError(
            f"{path}: cannot be read as a weights-only torch file ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''})"
        ) from None


def save_model_dir(
    path: str | Path,
    config: Mapping[str, Any],
    weights: Mapping[str, Mapping[str, torch.Tensor]],
    extra_files: Mapping[str, Callable[[Path], None]] | None = None,
    flag: str = "OUT_DIR",
    owned: bool = False,
) -> Path:
    """Write a model directory atomically: ``config.json`` and one safetensors file per entry of
    ``weights`` (e.g. ``{"model": state_dict, "ema": state_dict}``), plus ``extra_files`` written by
    callbacks given the target path. The directory appears complete or not at all; an existing folder
    genzoo did not write is refused (``owned``: the caller owns the parent, e.g. a run's checkpoints)."""
    from genzoo.io.atomic import atomic_folder

    with atomic_folder(path, flag, owned=owned) as tmp:
        write_json_atomic(tmp / "config.json", config)
        for name, state in weights.items():
            save_file(
                {k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp / f"{name}.safetensors")
            )
        for name, writer in (extra_files or {}).items():
            writer(tmp / name)
    return Path(path)


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoint directories of a run, oldest first (temporary ones are hidden dot-dirs)."""
    run_dir = Path(run_dir)
    try:
        entries = list(run_dir.iterdir())
    except OSError:
        return []
    found = [
        (int(m.group(1)), p)
        for p in entries
        if (m := CHECKPOINT_PATTERN.match(p.name)) and p.is_dir()
    ]
    return [p for _, p in sorted(found)]


def model_dir_candidates(path: str | Path) -> list[Path]:
    """Model directories ``path`` names, best first: the directory itself (a checkpoint or converted
    model), or a run's complete checkpoints newest first (one being pruned or written is skipped)."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"--ckpt {path}: no such run, checkpoint or model directory")
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return [path]
    found = [p for p in reversed(list_checkpoints(path))
             if (p / "config.json").is_file() and (p / "model.safetensors").is_file()]
    if found:
        return found
    raise UserError(
        f"--ckpt {path}: expected a genzoo run directory (with a complete checkpoint-NNNNNN/) or a model "
        "directory (config.json + model.safetensors)"
    )


def resolve_model_dir(path: str | Path) -> Path:
    """A model directory from a run directory (its latest complete checkpoint), a checkpoint or a
    converted model."""
    return model_dir_candidates(path)[0]


def load_state_into(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with an error listing missing/unexpected keys and the first
    shape mismatch, naming ``source``."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatch = next(
        (
            (k, tuple(state[k].shape), tuple(v.shape))
            for k, v in own.items()
            if k in state and tuple(state[k].shape) != tuple(v.shape)
        ),
        None,
    )
    if missing or unexpected or mismatch:
        parts = []
        if missing:
            parts.append(
                f"missing keys ({len(missing)}): {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}"
            )
        if unexpected:
            parts.append(
                f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:8])}"
                f"{' ...' if len(unexpected) > 8 else ''}"
            )
        if mismatch:
            parts.append(
                f"first shape mismatch: {mismatch[0]} is {mismatch[1]} in the file, "
                f"{mismatch[2]} in the model"
            )
        raise UserError(f"{source}: does not match the model; " + "; ".join(parts))
    module.load_state_dict(state, strict=True)


# ----------------------------------------------------------------------------- official formats


@dataclass
class OfficialSource:
    """An importer of one official checkpoint format."""

    name: str
    #: build the public-semantics module from a state dict and the source's own config flags
    load: Callable[..., nn.Module]
    #: preset name -> the source's config flags
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: (module, flags) -> (genzoo config.json, {"model": state_dict}) for `genzoo convert`
    to_genzoo: (
        Callable[[nn.Module, dict[str, Any]], tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]]
        | None
    ) = None
    #: optional: guess a preset from a state dict (for error hints)
    guess_preset: Callable[[Mapping[str, torch.Tensor]], str | None] | None = None
    #: optional: read a file into what ``load`` takes (default: :func:`read_state_dict`), e.g. a
    #: restricted reader of network-snapshot pickles
    read: Callable[[Path], Any] | None = None
    #: optional: whether this source loads what ``read`` returned (to pick a source for a ``.pkl``)
    accepts: Callable[[Any], bool] | None = None


_SOURCES: dict[str, OfficialSource] = {}
_SOURCES_DISCOVERED = False


def register_source(source: OfficialSource) -> OfficialSource:
    _SOURCES[source.name] = source
    return source


def _discover_sources() -> None:
    global _SOURCES_DISCOVERED
    if not _SOURCES_DISCOVERED:
        for module in pkgutil.iter_modules(__path__):
            if not module.name.startswith("_"):
                importlib.import_module(f"{__name__}.{module.name}")
        _SOURCES_DISCOVERED = True


def source_names() -> list[str]:
    _discover_sources()
    return sorted(_SOURCES)


def get_source(name: str) -> OfficialSource:
    _discover_sources()
    if name not in _SOURCES:
        raise UserError(f"--from: unknown checkpoint source {name!r}; available: {', '.join(source_names())}")
    return _SOURCES[name]


def resolve_flags(source: OfficialSource, preset: str | None, flags: Mapping[str, Any]) -> dict[str, Any]:
    """The preset's flags overridden by explicit ones; an unknown preset lists the valid ones."""
    if preset is None:
        return dict(flags)
    if preset not in source.presets:
        raise UserError(
            f"--preset: unknown preset {preset!r} for {source.name}; "
            f"valid: {', '.join(sorted(source.presets))}"
        )
    return {**source.presets[preset], **flags}


def load_official(
    source: str,
    path_or_state_dict: str | Path | Mapping[str, torch.Tensor],
    preset: str | None = None,
    **flags: Any,
) -> nn.Module:
    """Load an official released checkpoint into a module with the public code's ``forward``.

    ``source`` names the format (e.g. ``guided-diffusion``), ``preset`` a released configuration,
    ``flags`` the source's own config keys (overriding the preset's).
    """
    src = get_source(source)
    resolved = resolve_flags(src, preset, flags)
    if isinstance(path_or_state_dict, (str, Path)):
        path = Path(path_or_state_dict)
        state = src.read(path) if src.read is not None else read_state_dict(path)
    else:
        path, state = None, dict(path_or_state_dict)
    module = src.load(state, **resolved)
    noted = official_import(module)  # a converter finds companion files beside it (BigGAN-PyTorch's D.pth)
    note_import(module, noted.source if noted is not None else src.name, path=path)
    return module


def source_for_pickle(path: str | Path) -> tuple[OfficialSource, Any]:
    """The official source that loads a network-snapshot ``.pkl`` (EDM, EDM2), and what it read from it.

    The file is read once by the restricted reader (no code runs); each source that reads pickles is
    asked whether it ``accepts`` the contents.
    """
    from genzoo.checkpoints.nvlabs_pickle import read_nvlabs_pickle

    path = Path(path)
    snapshot = read_nvlabs_pickle(path)
    for name in source_names():
        source = _SOURCES[name]
        if source.accepts is not None and source.accepts(snapshot):
            return source, snapshot
    ema = snapshot.get("ema")
    found = getattr(ema, "class_name", type(ema).__name__)
    raise UserError(f"{path}: a network snapshot whose 'ema' is {found}, which no genzoo importer knows "
                    f"(sources reading pickles: "
                    f"{', '.join(n for n in source_names() if _SOURCES[n].accepts is not None) or 'none'})")


def weights_file(path: str | Path | None, flag: str, env: str, help_text: str) -> Path:
    """The weights file named by ``flag`` (``path``) or else by the environment variable ``env``; a
    missing one is a :class:`UserError` naming the flag, ending with ``help_text`` (where to get it)."""
    path = path or os.environ.get(env)
    if not path:
        raise UserError(f"{flag}: not given and {env} is not set; {help_text}")
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{flag} {path}: no such file; {help_text}")
    return path


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a weights-only torch file (``.pt``/``.pth``/``.bin``)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_safetensors(path)
    state = load_torch_file(path)
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: expected a state dict (names -> tensors)")
    return dict(state)
