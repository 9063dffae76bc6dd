"""Finding what ``genzoo serve`` shows: models (runs and model directories) and reports under folders.

A run directory holds ``checkpoint-NNNNNN/config.json``; a model directory (converted or a single
checkpoint) holds ``config.json`` with a ``"family"`` key. A path given on the command line that is a
model or run is taken as it is; any other folder is searched.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genzoo.checkpoints import CHECKPOINT_PATTERN, list_checkpoints
from genzoo.errors import UserError

#: folders never searched (environments, VCS data, caches)
SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", ".cache"}


@dataclass(frozen=True)
class ModelEntry:
    """A model the app can open: display ``name``, ``path`` for ``genzoo.load``, its ``config.json``."""

    name: str
    path: Path
    family: str
    config: dict[str, Any]

    @property
    def label(self) -> str:
        extra = self.config.get("arch") or ""
        return f"{self.name} ({self.family}{', ' + extra if extra else ''})"


@dataclass(frozen=True)
class ReportEntry:
    """A ``genzoo compare`` or demo report: its folder and the files found there."""

    name: str
    folder: Path
    html: Path | None
    table: Path | None


def _read_config(path: Path) -> dict[str, Any] | None:
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) and isinstance(config.get("family"), str) else None


def model_at(path: Path) -> tuple[Path, dict[str, Any]] | None:
    """(path to load, config) when ``path`` is a run or a model directory, else None."""
    if (path / "config.json").is_file():
        config = _read_config(path / "config.json")
        if config is not None:
            return path, config
    checkpoints = list_checkpoints(path) if path.is_dir() else []
    checkpoints = [c for c in checkpoints if (c / "config.json").is_file()]
    if checkpoints:
        config = _read_config(checkpoints[-1] / "config.json")
        if config is not None:
            return path, config
    return None


def _walk(root: Path) -> Iterable[Path]:
    """Folders under ``root`` (itself included), not descending into models, runs or :data:`SKIP_DIRS`."""
    for folder, dirs, _files in os.walk(root):
        here = Path(folder)
        yield here
        if model_at(here) is not None:
            dirs[:] = []
            continue
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith(".")
                         and not CHECKPOINT_PATTERN.match(d))


def _name(path: Path, root: Path) -> str:
    try:
        rel = path.relative_to(root)
    except ValueError:
        rel = path
    return str(rel) if str(rel) != "." else path.name


def discover_models(paths: Sequence[str | Path], families: Sequence[str] | None = None) -> list[ModelEntry]:
    """Every model given or found under the folders given, in order, each once; ``families`` keeps only
    models of those families. A path that does not exist is a :class:`~genzoo.errors.UserError`."""
    found: dict[Path, ModelEntry] = {}
    for given in paths:
        root = Path(given)
        if not root.exists():
            raise UserError(f"{given}: no such model, run or folder")
        for folder in _walk(root) if root.is_dir() else []:
            hit = model_at(folder)
            if hit is None or folder.resolve() in found:
                continue
            path, config = hit
            name = _name(folder, root.parent if folder == root else root)
            found[folder.resolve()] = ModelEntry(name, path, config["family"], config)
    entries = list(found.values())
    if families is not None:
        entries = [e for e in entries if e.family in families]
    return _unique_names(entries)


def _unique_names(entries: list[ModelEntry]) -> list[ModelEntry]:
    seen: dict[str, int] = {}
    out = []
    for entry in entries:
        count = seen.get(entry.name, 0)
        seen[entry.name] = count + 1
        out.append(entry if not count else ModelEntry(f"{entry.name} #{count + 1}", entry.path, entry.family,
                                                      entry.config))
    return out


def discover_reports(paths: Sequence[str | Path]) -> list[ReportEntry]:
    """Folders holding a ``report.html`` or a ``table.md`` (``genzoo compare``, ``genzoo demo``)."""
    reports: dict[Path, ReportEntry] = {}
    for given in paths:
        root = Path(given)
        if not root.is_dir():
            continue
        for folder in _walk(root):
            html, table = folder / "report.html", folder / "table.md"
            if (html.is_file() or table.is_file()) and folder.resolve() not in reports:
                reports[folder.resolve()] = ReportEntry(
                    _name(folder, root.parent if folder == root else root), folder.resolve(),
                    html.resolve() if html.is_file() else None, table.resolve() if table.is_file() else None)
    return list(reports.values())
