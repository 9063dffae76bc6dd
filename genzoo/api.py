"""The Python API: ``load``, ``sample``, ``train``, ``evaluate``. The CLI calls these."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from genzoo.checkpoints.record import ModelRecord, find_record, record_of
from genzoo.errors import UserError
from genzoo.family import get_family, load_model
from genzoo.options import Options
from genzoo.sampling import SampleBatch, collect, iter_batches, model_device, sample_options

__all__ = ["ModelRecord", "SampleBatch", "iter_samples", "load", "posthoc_ema", "record_of", "sample",
           "sample_options", "write_samples"]
from genzoo.seeds import StackedRandomGenerator, labels_for_seeds, parse_seeds


def load(path: str | Path, ema: bool = True, device: str | torch.device = "cpu",
         compile: bool = False) -> nn.Module:
    """Open a run directory (its latest checkpoint), a checkpoint or a converted model directory.

    Returns the sampling model in eval mode with EMA weights when present (``ema=False`` for the raw
    ones). ``record_of(model)`` tells what it is: a :class:`ModelRecord` with its family, saved
    ``config.json``, where it came from (run, checkpoint, model directory or snapshot; the path, weights
    file and source format). An official network-snapshot ``.pkl`` (EDM, EDM2) is imported on the fly,
    as ``genzoo convert`` would, without running its code.
    ``compile=True`` compiles it for inference (``genzoo.nets.compiled``; minutes on the first batch,
    a warning and eager execution where no compiler is available).
    """
    model = load_model(path, ema=ema, device=device)
    if compile:
        from genzoo.nets.compiled import compile_for_inference

        compile_for_inference(model, device)
    return model


@torch.no_grad()
def iter_samples(model: nn.Module, seeds: str | Sequence[int],
                 class_labels: int | Sequence[int] | None = None, batch_size: int = 64,
                 device: str | torch.device | None = None, options: Options | None = None,
                 **values: Any) -> Iterator[SampleBatch | None]:
    """Generate one image per seed, batch by batch, in seed order; nothing is accumulated.

    Under ``torchrun`` each process makes every world-th batch (the batches of a 1-process run, so
    every image is bit-identical) and rank 0 yields all of them in order; the other ranks yield None
    per batch. Options are as :func:`sample`'s.
    """
    checked = sample_options(model, options, device, **values)
    checked = get_family(record_of(model).family).prepare_sampling(model, checked)
    yield from iter_batches(model, seeds, checked, class_labels, batch_size, device)


@torch.no_grad()
def sample(model: nn.Module, seeds: str | Sequence[int], class_labels: int | Sequence[int] | None = None,
           batch_size: int = 64, device: str | torch.device | None = None,
           on_batch: Callable[[torch.Tensor, torch.Tensor | None, list[int]], None] | None = None,
           options: Options | None = None, **values: Any) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Generate one image per seed with a loaded model.

    ``class_labels``: one class for all, one per seed, or None (random classes from the seed for a
    class-conditional model). The sampling options are the family's typed ``options``
    (``FAMILY.SampleOptions``) and/or keyword ``values`` (``sampler``, ``steps``, ``truncation``, ...);
    an option the model's family does not take raises a UserError naming it. Returns (uint8 NCHW
    images, labels or None, network evaluations per image). ``on_batch`` receives each batch as it is
    made, for streaming writers. Under ``torchrun`` rank 0 returns every image and the other ranks an
    empty tensor. :func:`iter_samples` keeps nothing.
    """
    return collect(iter_samples(model, seeds, class_labels, batch_size, device, options, **values), on_batch)


def write_samples(model: nn.Module, seeds: str | Sequence[int], out: str | Path | None = None,
                  grid: str | Path | None = None, class_labels: int | Sequence[int] | None = None,
                  batch_size: int = 64, device: str | torch.device | None = None, grid_max: int = 256,
                  options: Options | None = None, **values: Any) -> dict[str, Any]:
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
    options = sample_options(model, options, device, **values)
    settings = {k: _model_path(v) if isinstance(v, nn.Module) else v  # a model: its path
                for k, v in options.items() if isinstance(v, (int, float, str, bool, type(None), nn.Module))}
    record = record_of(model)
    options = get_family(record.family).prepare_sampling(model, options)  # once, before the clock
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
            for batch in iter_batches(model, seed_list, options, class_labels, batch_size, device):
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
            "model": _model_path(model), "family": record.family,
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


def _flops_per_image(model: nn.Module, seed: int, class_labels: Any, device: Any, options: Options,
                     count_flops: Callable) -> int | None:
    """FLOPs of sampling one image (the first seed's), counted once before the timed run."""
    record = record_of(model)
    family = get_family(record.family)
    first_label = class_labels[:1] if isinstance(class_labels, (list, tuple)) else class_labels
    labels = labels_for_seeds([seed], first_label, record.num_classes)
    device = model_device(model, device)
    label_tensor = torch.tensor(labels, device=device) if labels is not None else None
    with torch.no_grad():
        return count_flops(lambda: family.sample(model, StackedRandomGenerator(device, [seed]), label_tensor,
                                                 options)) or None


def _model_path(model: nn.Module) -> str:
    """The model directory a loaded model's weights came from ("" for a snapshot or a bare module)."""
    record = find_record(model)
    return str(record.model_dir) if record is not None and record.model_dir is not None else ""


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


#: kept for callers of the old private name
_labels_for_seeds = labels_for_seeds
