"""The Python API: ``load``, ``sample``, ``train``, ``evaluate``. The CLI calls these."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from genzoo.errors import UserError
from genzoo.family import get_family, load_model
from genzoo.seeds import StackedRandomGenerator, batches, parse_seeds


def load(path: str | Path, ema: bool = True, device: str | torch.device = "cpu") -> nn.Module:
    """Open a run directory (its latest checkpoint), a checkpoint or a converted model directory.

    Returns the sampling model in eval mode with EMA weights when present (``ema=False`` for the raw
    ones); its ``config`` attribute holds the saved ``config.json``. An official network-snapshot
    ``.pkl`` (EDM, EDM2) is imported on the fly, as ``genzoo convert`` would, without running its code.
    """
    return load_model(path, ema=ema, device=device)


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
    guide = options.get("guide_model")
    if guide is not None and not isinstance(guide, nn.Module):  # a path: the API loads it
        if model.config["family"] != "diffusion":
            raise UserError("--guide-model: autoguidance is for diffusion models, not "
                            f"{model.config['family']}")
        try:
            guide = load(guide, device=device)
        except UserError as err:
            raise UserError(f"--guide-model: {err}") from None
        options = dict(options, guide_model=guide)
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


def posthoc_ema(run: str | Path, out: str | Path, std: float | None = None, sweep: str | None = None,
                at_kimg: float | None = None) -> list[Path]:
    """Post-hoc EMA (EDM2): the EMA of relative length ``std`` reconstructed from the run's stored
    power-function EMA snapshots, written as a model directory ``out``; or with ``sweep`` ("LO:HI:N"),
    one model per std under ``out/std-0.XXX``. ``at_kimg``: reconstruct at that point of training
    (default: the newest snapshot). Returns the model directories."""
    from genzoo.train.phema import parse_sweep, write_posthoc_models

    if (std is None) == (sweep is None):
        raise UserError("phema: give exactly one of --std S or --sweep LO:HI:N")
    out = Path(out)
    if sweep is not None:
        stds = parse_sweep(sweep)
        outs = [out / f"std-{s:.3f}" for s in stds]
        if len(set(outs)) != len(outs):
            raise UserError(f"--sweep {sweep}: two stds round to the same 3 decimals")
    else:
        stds, outs = [float(std)], [out]
    images = None if at_kimg is None else int(round(at_kimg * 1000))
    return write_posthoc_models(run, stds, outs, images)


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
