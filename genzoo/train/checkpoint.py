"""Training checkpoints: ``OUT/checkpoint-{step:06d}/`` written atomically, found again for ``--resume``.

Layout: ``config.json``; ``model.safetensors`` (the players, keys ``"<player>.<key>"``);
``ema.safetensors`` (the EMA players, same keys); ``phema.safetensors`` (the power-function EMAs of
post-hoc EMA, keys ``"averages.p<i>.<player>.<key>"``, when tracked); ``objective.safetensors`` (other
persistent state of the objective, when it has any); ``optimizer.pt`` (optimiser and grad-scaler
states, readable with ``torch.load(weights_only=True)``); ``state.json`` (step, images seen, data
position, RNG states).
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genzoo.checkpoints import (
    list_checkpoints,
    load_safetensors,
    load_torch_file,
    read_json,
    save_model_dir,
    write_json_atomic,
)
from genzoo.errors import UserError

STATE_KEYS = ("step", "images_seen", "data_position")


@dataclass
class TrainingCheckpoint:
    """Everything read back from one checkpoint directory (CPU tensors)."""

    path: Path
    config: dict[str, Any]
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    objective: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    state: dict[str, Any] = field(default_factory=dict)
    phema: dict[str, torch.Tensor] = field(default_factory=dict)


def write_optimizer(path: Path, optimizer_state: Mapping[str, Any]) -> None:
    torch.save(dict(optimizer_state), path)


def save_checkpoint(path: Path, config: Mapping[str, Any], weights: Mapping[str, Mapping[str, torch.Tensor]],
                    optimizer_state: Mapping[str, Any], state: Mapping[str, Any]) -> Path:
    """Write a checkpoint directory atomically (temporary directory, then rename)."""
    weights = {name: _unshared(sd) for name, sd in weights.items() if sd}
    return save_model_dir(path, config, weights, extra_files={
        "optimizer.pt": lambda p: write_optimizer(p, optimizer_state),
        "state.json": lambda p: write_json_atomic(p, state),
    }, owned=True)


def _unshared(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors sharing memory (tied weights): give repeats their own copy."""
    seen: set[tuple[int, int]] = set()
    out = {}
    for key, tensor in state.items():
        tensor = tensor.detach()
        ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if tensor.numel() and ident in seen:
            tensor = tensor.clone()
        seen.add(ident)
        out[key] = tensor
    return out


def read_checkpoint(path: Path) -> TrainingCheckpoint:
    """Read and check every file of a checkpoint; a missing or corrupt one raises a UserError naming it."""
    config = read_json(path / "config.json")
    model = load_safetensors(path / "model.safetensors")
    ema = load_safetensors(path / "ema.safetensors") if (path / "ema.safetensors").exists() else {}
    objective = (load_safetensors(path / "objective.safetensors")
                 if (path / "objective.safetensors").exists() else {})
    phema = load_safetensors(path / "phema.safetensors") if (path / "phema.safetensors").exists() else {}
    optimizer = load_torch_file(path / "optimizer.pt")
    if not isinstance(optimizer, dict):
        raise UserError(f"{path / 'optimizer.pt'}: expected a dict of optimiser states")
    state = read_json(path / "state.json")
    missing = [k for k in STATE_KEYS if k not in state]
    if missing:
        raise UserError(f"{path / 'state.json'}: missing keys {', '.join(missing)}")
    for key in STATE_KEYS:
        if not isinstance(state[key], int) or isinstance(state[key], bool) or state[key] < 0:
            raise UserError(f"{path / 'state.json'}: {key!r} must be a non-negative integer, "
                            f"got {state[key]!r}")
    return TrainingCheckpoint(path, config, model, ema, objective, optimizer, state, phema)


def find_resumable(run_dir: Path, say: Callable[[str], None]) -> TrainingCheckpoint | None:
    """The newest checkpoint of ``run_dir`` whose files all read; broken ones are reported and skipped."""
    errors = []
    for path in reversed(list_checkpoints(run_dir)):
        try:
            checkpoint = read_checkpoint(path)
        except UserError as err:
            errors.append(str(err))
            say(f"--resume: {err}; falling back to the previous checkpoint")
            continue
        if errors:
            say(f"--resume: resuming from {path.name} (a later checkpoint is broken)")
        return checkpoint
    if errors:
        raise UserError(f"--resume: no complete checkpoint in {run_dir}: " + "; ".join(errors))
    return None


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (``keep`` <= 0 keeps all).

    Each is first renamed to a hidden name (one atomic step), then deleted, so no half-deleted
    ``checkpoint-N`` is ever visible; a kill between the two leaves a hidden folder that the next
    ``--resume`` removes (:func:`remove_partial_checkpoints`)."""
    if keep <= 0:
        return
    for path in list_checkpoints(run_dir)[:-keep]:
        doomed = path.with_name(f".{path.name}.pruned-{os.getpid()}")
        try:
            os.replace(path, doomed)
        except OSError:
            continue  # already gone (another reader or process)
        shutil.rmtree(doomed, ignore_errors=True)


def remove_partial_checkpoints(run_dir: Path) -> list[Path]:
    """Remove temporary directories a killed save left behind (``.checkpoint-NNNNNN.*``)."""
    removed = []
    for path in run_dir.glob(".checkpoint-*"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


# ----------------------------------------------------------------------------- RNG states as JSON


def _b64(tensor: torch.Tensor) -> str:
    return base64.b64encode(tensor.cpu().numpy().tobytes()).decode("ascii")


def _unb64(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8).clone()


def _b64_words(words) -> str:
    return base64.b64encode(np.asarray(words, dtype=np.uint32).tobytes()).decode("ascii")


def _unb64_words(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.uint32).copy()


def rng_states() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and Python RNG states as JSON-able data."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": _b64(torch.get_rng_state()),
        "cuda": [_b64(s) for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
        "numpy": [np_state[0], _b64_words(np_state[1]), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "python": [py_state[0], _b64_words(py_state[1]), py_state[2]],
    }


def set_rng_states(states: Mapping[str, Any]) -> None:
    torch.set_rng_state(_unb64(states["torch"]))
    if states.get("cuda") and torch.cuda.is_available():
        cuda = [_unb64(s) for s in states["cuda"]]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, _unb64_words(keys), pos, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(int(v) for v in _unb64_words(internal)), gauss))


def to_json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
