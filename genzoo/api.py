"""The Python API: ``load``, ``sample``, ``train``, ``evaluate``. The CLI calls these."""

from __future__ import annotations

import numbers
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn as nn

from genzoo.errors import UserError
from genzoo.family import get_family, load_model
from genzoo.seeds import StackedRandomGenerator, batches, parse_seeds


def load(path: str | Path, ema: bool = True, device: str | torch.device = "cpu",
         compile: bool = False) -> nn.Module:
    """Open a run directory (its latest checkpoint), a checkpoint or a converted model directory.

    Returns the sampling model in eval mode with EMA weights when present (``ema=False`` for the raw
    ones); its ``config`` attribute holds the saved ``config.json``. An official network-snapshot
    ``.pkl`` (EDM, EDM2) is imported on the fly, as ``genzoo convert`` would, without running its code.
    ``compile=True`` compiles it for inference (``genzoo.nets.compiled``; minutes on the first batch,
    a warning and eager execution where no compiler is available).
    """
    model = load_model(path, ema=ema, device=device)
    if compile:
        from genzoo.nets.compiled import compile_for_inference

        compile_for_inference(model, device)
    return model


class SampleBatch(NamedTuple):
    """One batch of samples: uint8 NCHW images on the CPU, their labels, seeds and prompts."""

    images: torch.Tensor
    labels: torch.Tensor | None
    seeds: list[int]
    prompts: list[str] | None
    nfe: int
    seconds: float  # wall time of making this batch (in the process that made it)


@torch.no_grad()
def iter_samples(model: nn.Module, seeds: str | Sequence[int],
                 class_labels: int | Sequence[int] | None = None, batch_size: int = 64,
                 device: str | torch.device | None = None,
                 **options: Any) -> Iterator[SampleBatch | None]:
    """Generate one image per seed, batch by batch, in seed order; nothing is accumulated.

    Under ``torchrun`` each process makes every world-th batch (the batches of a 1-process run, so
    every image is bit-identical) and rank 0 yields all of them in order; the other ranks yield None
    per batch. Options are as :func:`sample`'s.
    """
    from genzoo.io import to_uint8
    from genzoo.train.distributed import map_in_order

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
    options = family.prepare_sampling(model, _with_guide_model(model, options, device))

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


@torch.no_grad()
def sample(model: nn.Module, seeds: str | Sequence[int], class_labels: int | Sequence[int] | None = None,
           batch_size: int = 64, device: str | torch.device | None = None,
           on_batch: Callable[[torch.Tensor, torch.Tensor | None, list[int]], None] | None = None,
           **options: Any) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Generate one image per seed with a loaded model.

    ``class_labels``: one class for all, one per seed, or None (random classes from the seed for a
    class-conditional model). ``options`` are the family's sampling options (``sampler``, ``steps``,
    ``truncation``, ...). Returns (uint8 NCHW images, labels or None, network evaluations per image).
    ``on_batch`` receives each batch as it is made, for streaming writers. Under ``torchrun`` rank 0
    returns every image and the other ranks an empty tensor. :func:`iter_samples` keeps nothing.
    """
    images_out, labels_out, nfe = [], [], 0
    for batch in iter_samples(model, seeds, class_labels, batch_size, device, **options):
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


def write_samples(model: nn.Module, seeds: str | Sequence[int], out: str | Path | None = None,
                  grid: str | Path | None = None, class_labels: int | Sequence[int] | None = None,
                  batch_size: int = 64, device: str | torch.device | None = None, grid_max: int = 256,
                  **options: Any) -> dict[str, Any]:
    """Stream samples to ``out`` (``.npz``, or a folder of ``{seed:06d}.png``) and the first ``grid_max``
    to a PNG grid, holding one batch at a time. Under ``torchrun`` the processes share the batches and
    rank 0 writes, and writes the cost beside the samples (:func:`genzoo.metrics.cost.sample_cost_path`):
    NFE, images/s, median latency per batch, peak memory, FLOPs per image (``torch.utils.flop_counter``),
    parameters × NFE and the settings. Returns that cost (rank 0; the other ranks get the counts only)."""
    from genzoo.io import PngFolderWriter, check_output_file, open_sample_writer, save_grid
    from genzoo.metrics.cost import (
        cost_json,
        count_flops,
        parameter_count,
        peak_memory,
        sample_cost_path,
        write_sample_cost,
    )
    from genzoo.progress import progress
    from genzoo.train.distributed import Distributed

    if out is not None and Path(out).suffix == ".npz":
        check_output_file(out)
    elif out is not None and Path(out).exists() and not Path(out).is_dir():
        raise UserError(f"--out {out}: exists and is not a directory (give FILE.npz or a folder for PNGs)")
    group = Distributed.current()
    seed_list = parse_seeds(seeds)
    settings = {k: v for k, v in options.items() if isinstance(v, (int, float, str, bool, type(None)))}
    options = _with_guide_model(model, options, device)  # loaded once, for the FLOP count and the run
    kept: list[torch.Tensor] = []
    nfe, latencies = 0, []
    flops = _flops_per_image(model, seed_list[0], class_labels, device, options, count_flops) \
        if group.is_main else None
    writer = open_sample_writer(out) if out is not None and group.is_main else None
    bar = progress(len(seed_list), "sample", main_process=group.is_main)
    device_type = torch.device(device).type if device is not None else next(model.parameters()).device.type
    start = time.perf_counter()
    try:
        with peak_memory(device if device is not None else next(model.parameters()).device) as memory:
            for batch in iter_samples(model, seed_list, class_labels, batch_size, device, **options):
                if batch is not None:
                    latencies.append(batch.seconds)
                    if writer is not None:
                        writer.write(batch.images, batch.labels, batch.prompts, seeds=batch.seeds)
                    if grid is not None and sum(len(k) for k in kept) < grid_max:
                        kept.append(batch.images[:grid_max - sum(len(k) for k in kept)])
                    nfe = batch.nfe
                    bar.update(len(batch.seeds))
        seconds = time.perf_counter() - start
        bar.close()
        cost = {"num_images": len(seed_list), "nfe": nfe, "seconds": round(seconds, 4),
                "images_per_s": len(seed_list) / seconds if seconds > 0 else None}
        if not group.is_main:
            return cost
        params = parameter_count(model)
        cost.update({
            "latency_s": statistics.median(latencies) if latencies else None, "batch_size": batch_size,
            "peak_memory_mb": memory["peak_memory_mb"], "device": device_type, "processes": group.world,
            "flops_per_image": flops, "parameters": params, "params_x_nfe": params * nfe,
            "sampler": settings,
            "model": str(getattr(model, "model_dir", "")), "family": model.config.get("family"),
        })
        if grid is not None and kept:
            save_grid(torch.cat(kept), grid)
        if writer is not None:  # the samples (and a PNG folder's cost.json) appear only when all were made
            if isinstance(writer, PngFolderWriter):
                writer.close(extra={sample_cost_path(out).name: cost_json(cost)})
            else:
                writer.close()
                write_sample_cost(out, cost)
            cost["cost_file"] = str(sample_cost_path(out))
    except BaseException:
        if writer is not None:
            writer.__exit__(*sys.exc_info())
        raise
    finally:
        bar.close()
    return cost


def _with_guide_model(model: nn.Module, options: dict[str, Any], device: Any) -> dict[str, Any]:
    """``options`` with ``guide_model`` loaded when it is a path."""
    guide = options.get("guide_model")
    if guide is None or isinstance(guide, nn.Module):
        return options
    if model.config["family"] != "diffusion":
        raise UserError(f"--guide-model: autoguidance is for diffusion models, not {model.config['family']}")
    try:
        guide = load(guide, device=device)
    except UserError as err:
        raise UserError(f"--guide-model: {err}") from None
    return dict(options, guide_model=guide)


def _flops_per_image(model: nn.Module, seed: int, class_labels: Any, device: Any, options: dict[str, Any],
                     count_flops: Callable) -> int | None:
    """FLOPs of sampling one image (the first seed's), counted once before the timed run."""
    family = get_family(model.config["family"])
    first_label = class_labels[:1] if isinstance(class_labels, (list, tuple)) else class_labels
    labels = _labels_for_seeds([seed], first_label, int(model.config.get("num_classes", 0) or 0))
    device = torch.device(device) if device is not None else next(model.parameters()).device
    label_tensor = torch.tensor(labels, device=device) if labels is not None else None
    options = family.prepare_sampling(model, options)
    with torch.no_grad():
        return count_flops(lambda: family.sample(model, StackedRandomGenerator(device, [seed]), label_tensor,
                                                 options)) or None


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
