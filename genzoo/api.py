"""The Python API: ``load``, ``sample``, ``train``, ``evaluate``. The CLI calls these."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from genzoo.checkpoints import load_safetensors, load_state_into, model_dir_candidates, read_json
from genzoo.errors import UserError
from genzoo.family import get_family
from genzoo.seeds import StackedRandomGenerator, batches, parse_seeds


def load(path: str | Path, ema: bool = True, device: str | torch.device = "cpu") -> nn.Module:
    """Open a run directory (its latest checkpoint), a checkpoint or a converted model directory.

    Returns the sampling model in eval mode with EMA weights when present (``ema=False`` for the raw
    ones); its ``config`` attribute holds the saved ``config.json``.
    """
    candidates = model_dir_candidates(path)
    for i, model_dir in enumerate(candidates):
        try:
            model = _load_dir(model_dir, ema)
            break
        except UserError:
            # a run's checkpoint pruned (or broken) while we read it: the next newest complete one
            if i + 1 == len(candidates) or (model_dir / "config.json").is_file():
                raise
    return model.to(device).eval()


def _load_dir(model_dir: Path, ema: bool) -> nn.Module:
    config = read_json(model_dir / "config.json")
    if not isinstance(config, dict) or "family" not in config:
        raise UserError(f"{model_dir / 'config.json'}: no 'family' key; not a genzoo model")
    if "net" in config and not isinstance(config["net"], dict):
        raise UserError(f"{model_dir / 'config.json'}: 'net' must be a table of network settings, got "
                        f"{type(config['net']).__name__}")
    family = get_family(config["family"])
    try:
        model = family.build_model(config)
    except (TypeError, ValueError, KeyError) as err:
        raise UserError(f"{model_dir / 'config.json'}: cannot build the {config['family']} model "
                        f"({type(err).__name__}: {err})") from None
    prefix = config.get("sampled_player", "net") + "."
    state: dict[str, torch.Tensor] = {}
    weights_file = model_dir / "ema.safetensors"
    if ema and weights_file.is_file():
        state = _with_prefix(load_safetensors(weights_file), prefix)
    if not state:  # no EMA file, or its EMA covers other players only
        weights_file = model_dir / "model.safetensors"
        state = _with_prefix(load_safetensors(weights_file), prefix)
    bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise UserError(f"{weights_file}: weights hold NaN or Inf values (first: {bad}); the model is broken")
    load_state_into(model, state, str(weights_file))
    model.weights_file = weights_file
    model.config = config
    model.model_dir = model_dir
    return model


@torch.no_grad()
def sample(model: nn.Module, seeds: str | Sequence[int], class_labels: int | Sequence[int] | None = None,
           batch_size: int = 64, device: str | torch.device | None = None,
           on_batch: Callable[[torch.Tensor, torch.Tensor | None, list[int]], None] | None = None,
           **options: Any) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Generate one image per seed with a loaded model.

    ``class_labels``: one class for all, one per seed, or None (random classes from the seed for a
    class-conditional model). ``options`` are the family's sampling options (``sampler``, ``steps``,
    ``truncation``, ...). Returns (uint8 NCHW images, labels or None, network evaluations per image).
    ``on_batch`` receives each batch as it is made, for streaming writers.
    """
    from genzoo.io import to_uint8

    seeds = parse_seeds(seeds)
    family = get_family(model.config["family"])
    device = torch.device(device) if device is not None else next(model.parameters()).device
    num_classes = int(model.config.get("num_classes", 0) or 0)
    fixed = family.labels_for(model, seeds, options)
    if fixed is not None:
        if class_labels is not None:
            raise UserError("--class: these samples' classes are fixed by the sample options (the "
                            "--low-res base samples' labels); drop --class")
        class_labels = fixed
    labels_all = _labels_for_seeds(seeds, class_labels, num_classes)
    options = family.prepare_sampling(model, options)
    images_out, labels_out, nfe = [], [], 0
    for batch_seeds in batches(seeds, batch_size):
        rng = StackedRandomGenerator(device, batch_seeds)
        labels = None
        if labels_all is not None:
            labels = torch.tensor([labels_all[seeds.index(s)] for s in batch_seeds], device=device)
        images, nfe = family.sample(model, rng, labels, options)
        images = to_uint8(images).cpu()
        if on_batch is not None:
            on_batch(images, labels.cpu() if labels is not None else None, batch_seeds)
        images_out.append(images)
        if labels is not None:
            labels_out.append(labels.cpu())
    return torch.cat(images_out), (torch.cat(labels_out) if labels_out else None), nfe


def _with_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of one player (keys ``"<player>.<key>"``), with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _is_class(value: Any, num_classes: int) -> bool:
    integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    return integral and 0 <= int(value) < num_classes


def _labels_for_seeds(seeds: list[int], class_labels: int | Sequence[int] | None,
                      num_classes: int) -> list[int] | None:
    """One label per seed: given (one for all or one per seed, each in [0, num_classes)) or drawn."""
    if num_classes <= 0:
        if class_labels is not None:
            raise UserError("--class: this model is unconditional (no classes); drop --class")
        return None
    if class_labels is not None:
        given = [class_labels] if isinstance(class_labels, int) else list(class_labels)
        bad = next((c for c in given if not _is_class(c, num_classes)), None)
        if bad is not None:
            raise UserError(f"--class {bad}: expected a class in [0, {num_classes - 1}] for this model")
        if len(given) not in (1, len(seeds)):
            raise UserError(f"--class: {len(given)} labels for {len(seeds)} seeds; give one for all or "
                            "one per seed")
    if class_labels is None:
        # A class drawn from the seed alone, so it too is independent of batching.
        return [int(torch.randint(num_classes, (1,), generator=torch.Generator().manual_seed(s + (1 << 32))))
                for s in seeds]
    if isinstance(class_labels, int):
        return [class_labels] * len(seeds)
    class_labels = list(class_labels)
    if len(class_labels) == 1:
        return class_labels * len(seeds)
    return class_labels
