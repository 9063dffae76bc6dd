"""What a loaded model is: :class:`ModelRecord`, made by the loader (:func:`genzoo.family.load_model`)
and read by everything downstream (sampling, the CLI, the web app, reproduce, guidance, teachers).

The record is kept beside the model, not on it: :func:`record_of` looks it up. A model built by hand
(``Family.build_model``) has none until :func:`describe` gives it one. An official importer notes what
it read into a module the same way (:class:`OfficialImport`, for its converter).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.nn as nn

#: where a model came from (``ModelRecord.source``)
SOURCES = ("run", "checkpoint", "model", "snapshot", "training")


@dataclass(frozen=True)
class ModelRecord:
    """A loaded model's identity and provenance.

    ``source``: ``"run"`` (a run directory: its newest complete checkpoint), ``"checkpoint"`` (one
    training checkpoint), ``"model"`` (a model directory that ``genzoo convert`` or ``genzoo phema``
    wrote), ``"snapshot"`` (an official ``.pkl`` imported on the fly) or ``"training"`` (the network
    being trained, for the engine's sample grids). ``source_format`` is ``"genzoo"`` or the official
    format it was converted from (``config["source"]``: ``"edm"``, ``"guided-diffusion"``, ...).
    ``config`` is the saved ``config.json`` (for a snapshot: what ``genzoo convert`` would write); treat
    it as read-only.
    """

    family: str
    config: dict[str, Any]
    source: str
    path: Path | None = None  # what was opened: a run, a model directory or a .pkl
    model_dir: Path | None = None  # the directory the weights came from (None for a .pkl)
    weights_file: Path | None = None
    source_format: str = "genzoo"
    ema: bool = True  # whether EMA weights were asked for (a model without an EMA file has raw ones)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source {self.source!r}: expected one of {', '.join(SOURCES)}")

    @property
    def arch(self) -> str | None:
        """The network architecture name (``config["arch"]``), if the config names one."""
        return self.config.get("arch")

    @property
    def num_classes(self) -> int:
        return int(self.config.get("num_classes", 0) or 0)


_RECORDS: weakref.WeakKeyDictionary[nn.Module, ModelRecord] = weakref.WeakKeyDictionary()


def describe(model: nn.Module, config: dict[str, Any], source: str, path: Path | None = None,
             model_dir: Path | None = None, weights_file: Path | None = None,
             ema: bool = True) -> ModelRecord:
    """Make ``model``'s record (replacing any it had) and return it: the one place records are made."""
    converted = config.get("converted_from") or {}
    record = ModelRecord(family=str(config["family"]), config=config, source=source,
                         path=None if path is None else Path(path),
                         model_dir=None if model_dir is None else Path(model_dir),
                         weights_file=None if weights_file is None else Path(weights_file),
                         source_format=str(config.get("source") or converted.get("source") or "genzoo"),
                         ema=bool(ema))
    _RECORDS[model] = record
    return record


def find_record(model: Any) -> ModelRecord | None:
    """``model``'s record, or None (a model built by hand, or not a module)."""
    try:
        return _RECORDS.get(model)
    except TypeError:  # not weak-referenceable: not a module
        return None


def record_of(model: Any) -> ModelRecord:
    """``model``'s record; a TypeError for a model that ``genzoo.load`` did not make."""
    record = find_record(model)
    if record is None:
        raise TypeError(f"{type(model).__name__}: not a model loaded by genzoo.load (it has no record)")
    return record


def config_of(model: Any) -> dict[str, Any]:
    """The saved config of a loaded model; {} for a model built by hand."""
    record = find_record(model)
    return record.config if record is not None else {}


@dataclass(frozen=True)
class OfficialImport:
    """What an official importer (:func:`genzoo.checkpoints.load_official`) read into a module: the
    released format, the resolved flags its converter writes into ``config.json``, and the file it came
    from (a converter looks for companion files beside it, e.g. BigGAN-PyTorch's ``D.pth``)."""

    source: str
    flags: dict[str, Any]
    path: Path | None = None


_IMPORTS: weakref.WeakKeyDictionary[nn.Module, OfficialImport] = weakref.WeakKeyDictionary()


def note_import(module: nn.Module, source: str | None = None, flags: dict[str, Any] | None = None,
                path: Path | None = None) -> None:
    """Record (or complete) what an importer read into ``module``; a value left None keeps the noted one."""
    before = _IMPORTS.get(module) or OfficialImport(source or "", {})
    _IMPORTS[module] = OfficialImport(source or before.source, before.flags if flags is None else flags,
                                      before.path if path is None else Path(path))


def official_import(module: Any) -> OfficialImport | None:
    """What :func:`note_import` recorded for ``module``, or None (a module no importer made)."""
    try:
        return _IMPORTS.get(module)
    except TypeError:
        return None
