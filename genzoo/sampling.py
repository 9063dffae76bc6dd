"""The sampling loop every front end shares: seeds -> per-seed generators -> batches -> the family's
``sample`` -> uint8 images, in seed order, under ``torchrun`` split over the processes.

:func:`sample_options` checks a model's options against its family and loads the models that options
name by path (a guide model, a classifier), so the families below get models, never paths. The API
(:mod:`genzoo.api`), the training engine's sample grids and the web app all sample through here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn as nn

from genzoo.checkpoints.record import record_of
from genzoo.errors import UserError
from genzoo.family import get_family, load_model
from genzoo.options import Options, OptionSpec
from genzoo.seeds import StackedRandomGenerator, batches, labels_for_seeds, parse_seeds


class SampleBatch(NamedTuple):
    """One batch of samples: uint8 NCHW images on the CPU, their labels, seeds and prompts."""

    images: torch.Tensor
    labels: torch.Tensor | None
    seeds: list[int]
    prompts: list[str] | None
    nfe: int
    seconds: float  # wall time of making this batch (in the process that made it)


def model_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    return torch.device(device) if device is not None else next(model.parameters()).device


@torch.no_grad()
def iter_batches(model: nn.Module, seeds: str | Sequence[int], options: Options,
                 class_labels: int | Sequence[int] | None = None, batch_size: int = 64,
                 device: str | torch.device | None = None) -> Iterator[SampleBatch | None]:
    """One image per seed, batch by batch, in seed order; nothing is accumulated. Under ``torchrun``
    each process makes every world-th batch (the batches of a 1-process run, so every image is
    bit-identical) and rank 0 yields all of them in order; the other ranks yield None per batch."""
    from genzoo.io import to_uint8
    from genzoo.train.distributed import map_in_order

    seeds = parse_seeds(seeds)
    record = record_of(model)
    family = get_family(record.family)
    device = model_device(model, device)
    fixed = family.labels_for(model, seeds, options)
    if fixed is not None:
        if class_labels is not None:
            raise UserError("--class: these samples' classes are fixed by the sample options (the "
                            "--low-res base samples' labels); drop --class")
        class_labels = fixed
    labels_all = labels_for_seeds(seeds, class_labels, record.num_classes)

    def make(positions: list[int]) -> SampleBatch:
        start = time.perf_counter()
        batch_seeds = [seeds[i] for i in positions]
        rng = StackedRandomGenerator(device, batch_seeds)
        labels = None
        if labels_all is not None:
            labels = torch.tensor([labels_all[i] for i in positions], device=device)
        images, nfe = family.sample(model, rng, labels, options)
        images = to_uint8(images).cpu()
        return SampleBatch(images, labels.cpu() if labels is not None else None, list(batch_seeds),
                           family.prompts_for(model, batch_seeds, options), nfe, time.perf_counter() - start)

    for _, batch in map_in_order(batches(range(len(seeds)), batch_size), make):
        yield batch


def sample_options(model: nn.Module, options: Options | None = None, device: str | torch.device | None = None,
                   **values: Any) -> Options:
    """The model's checked sample options (``options``, updated by keyword ``values``): a keyword the
    model's family does not take is a UserError naming it and the family. Paths given for options that
    name a model (``guide_model``, ``classifier``) are loaded here, so the families get models."""
    family = get_family(record_of(model).family)
    if options is not None:
        values = {**dict(options), **values}
    options = family.sample_options(model, values)
    loaded = {}
    for spec in options.specs():
        value = options[spec.name]
        if spec.loads is not None and value is not None and not isinstance(value, nn.Module):
            loaded[spec.name] = _load_option_model(spec, value, device or model_device(model, None))
    return options.replace(**loaded) if loaded else options


def _load_option_model(spec: OptionSpec, path: Any, device: str | torch.device) -> nn.Module:
    try:
        other = load_model(path, device=device)
    except UserError as err:
        raise UserError(f"{spec.flag}: {err}") from None
    family = record_of(other).family
    if spec.loads != "denoiser" and family != spec.loads:
        raise UserError(f"{spec.flag} {path}: not a {spec.loads} model (family {family!r})")
    return other


def collect(batch_iter: Iterable[SampleBatch | None],
            on_batch: Callable[[torch.Tensor, torch.Tensor | None, list[int]], None] | None = None,
            ) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """(uint8 NCHW images, labels or None, NFE per image) of all batches; an empty tensor on the ranks
    that yield None."""
    images_out, labels_out, nfe = [], [], 0
    for batch in batch_iter:
        if batch is None:
            continue
        if on_batch is not None:
            on_batch(batch.images, batch.labels, batch.seeds)
        images_out.append(batch.images)
        if batch.labels is not None:
            labels_out.append(batch.labels)
        nfe = batch.nfe
    if not images_out:
        return torch.empty(0, dtype=torch.uint8), None, nfe
    return torch.cat(images_out), (torch.cat(labels_out) if labels_out else None), nfe


def sample_with_defaults(model: nn.Module, seeds: str | Sequence[int], batch_size: int = 64,
                         device: str | torch.device | None = None, **values: Any
                         ) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Samples with the family's options (defaults unless given): the training engine's sample grids."""
    family = get_family(record_of(model).family)
    options = family.prepare_sampling(model, family.sample_options(model, values))
    return collect(iter_batches(model, seeds, options, batch_size=batch_size, device=device))
