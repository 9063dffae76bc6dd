"""``evaluate``: every metric of a sample set against a reference, in one streaming pass per set.

Samples and reference images go through the feature network batch by batch; only the running
statistics (two D×D float64 matrices per feature kind) and, for precision/recall and KID, the pool
features of at most ``pr_count`` images are kept.
"""

from __future__ import annotations

import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from genzoo.errors import UserError
from genzoo.metrics.reference import (
    LazyBatch,
    Reference,
    iter_dataset_batches,
    iter_npz_images,
    load_reference,
    save_reference,
)
from genzoo.metrics.scores import inception_score, kid, precision_recall
from genzoo.metrics.stats import FeatureStats, frechet_distance

ALL_METRICS = ("fid", "sfid", "is", "pr", "kid", "acc")
FEATURE_KINDS = ("inception", "shapes", "dinov2")
DEFAULT_METRICS = {"inception": ("fid", "sfid", "is", "pr"), "shapes": ("fid", "pr", "acc"),
                   "dinov2": ("fid",)}


def get_extractor(features: str = "inception", inception: str | Path | None = None,
                  classifier: str | Path | None = None, device: str | torch.device = "cpu",
                  dinov2: str | Path | None = None) -> nn.Module:
    """The feature network: ``inception`` or ``dinov2`` (each needs its weights file) or ``shapes``
    (ships with genzoo)."""
    if features == "dinov2":
        from genzoo.metrics.dinov2 import load_dinov2

        return load_dinov2(dinov2, device)
    if features == "inception":
        from genzoo.metrics.inception import load_inception

        return load_inception(inception, device)
    if features == "shapes":
        from genzoo.metrics.shapes_features import load_shapes_classifier

        return load_shapes_classifier(classifier, device)
    raise UserError(f"--features: expected one of {', '.join(FEATURE_KINDS)}, got {features!r}")


@dataclass
class FeatureSummary:
    """What one pass of a set through the feature network keeps."""

    pool: FeatureStats = field(default_factory=FeatureStats)
    spatial: FeatureStats = field(default_factory=FeatureStats)
    logits: list[torch.Tensor] = field(default_factory=list)
    kept_pool: list[torch.Tensor] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    count: int = 0
    block_size: int = 0  # > 0: statistics also per disjoint block of this many images (in order)
    pool_blocks: list[FeatureStats] = field(default_factory=list)
    spatial_blocks: list[FeatureStats] = field(default_factory=list)

    def kept(self) -> torch.Tensor:
        return torch.cat(self.kept_pool)

    def all_logits(self) -> torch.Tensor:
        return torch.cat(self.logits)

    def update_blocks(self, offset: int, pool: torch.Tensor, spatial: torch.Tensor | None,
                      blocks: int) -> None:
        """Add a batch that starts at image ``offset`` to the per-block statistics (images after
        ``blocks`` full blocks are left out of them)."""
        start = 0
        while start < len(pool):
            index = (offset + start) // self.block_size
            if index >= blocks:
                break
            stop = min(len(pool), (index + 1) * self.block_size - offset)
            while len(self.pool_blocks) <= index:
                self.pool_blocks.append(FeatureStats())
                self.spatial_blocks.append(FeatureStats())
            self.pool_blocks[index].update(pool[start:stop])
            if spatial is not None:
                self.spatial_blocks[index].update(spatial[start:stop])
            start = stop


@torch.no_grad()
def summarize(extractor: nn.Module, batches: Iterable[np.ndarray | LazyBatch], *, spatial: bool = False,
              logits: bool = False, keep: int = 0, keep_images: int = 0, batch_size: int = 64,
              device: str | torch.device | None = None, total: int | None = None,
              desc: str = "features", blocks: int = 0) -> FeatureSummary:
    """Stream uint8 NHWC batches through ``extractor``: running statistics, plus the first ``keep``
    pool features (for precision/recall/KID) and first ``keep_images`` images (to save a reference).

    Under ``torchrun`` the processes share the batches (each decodes and runs only its own) and rank 0
    adds every batch's features in the order of a 1-process run, so the statistics are bit-identical;
    the other ranks return a summary with the image count only.
    """
    from genzoo.progress import progress
    from genzoo.train.distributed import Distributed, map_in_order

    device = device or next(extractor.parameters()).device
    group = Distributed.current()
    summary = FeatureSummary()
    if blocks > 1:
        if total is None or total // blocks < 2:
            raise UserError(f"--blocks {blocks}: needs at least 2 images per block, got {total} images")
        summary.block_size = total // blocks

    def work(item: tuple[int, np.ndarray | LazyBatch]) -> dict[str, Any]:
        offset, batch = item
        array = batch.load() if isinstance(batch, LazyBatch) else batch
        images = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).to(device)
        out = extractor(images)
        result = {"pool": out["pool"].detach().cpu()}
        if spatial:
            result["spatial"] = out["spatial"].detach().cpu()
        if logits:
            result["logits"] = out["logits"].float().cpu()
        if offset < keep_images:
            result["images"] = np.array(array[:keep_images - offset])
        return result

    bar = progress(total, desc, main_process=group.is_main)
    try:
        for (_, batch), out in map_in_order(_numbered(_rebatch(batches, batch_size)), work, group):
            if out is not None:
                summary.pool.update(out["pool"])
                if spatial:
                    summary.spatial.update(out["spatial"])
                if summary.block_size:
                    summary.update_blocks(summary.count, out["pool"], out.get("spatial"), blocks)
                if logits:
                    summary.logits.append(out["logits"])
                if summary.count < keep:
                    summary.kept_pool.append(out["pool"][:keep - summary.count].float())
                if "images" in out:
                    summary.images.append(out["images"])
            summary.count += len(batch)
            bar.update(len(batch))
    finally:
        bar.close()
    if summary.count == 0:
        raise UserError("no images to evaluate")
    return summary


def _numbered(batches: Iterable[np.ndarray | LazyBatch]) -> Iterator[tuple[int, np.ndarray | LazyBatch]]:
    """(index of the batch's first image, batch)."""
    offset = 0
    for batch in batches:
        yield offset, batch
        offset += len(batch)


def _rebatch(batches: Iterable[np.ndarray | LazyBatch], size: int) -> Iterator[np.ndarray | LazyBatch]:
    for batch in batches:
        if isinstance(batch, LazyBatch):
            yield from batch.split(size)
            continue
        for start in range(0, len(batch), size):
            yield batch[start:start + size]


def _sample_batches(samples: Any, limit: int | None
                    ) -> tuple[Iterable[np.ndarray | LazyBatch], np.ndarray | None, str, int,
                               tuple[int, ...]]:
    """(uint8 NHWC batches, labels or None, description, count, image shape HWC) from a path (``.npz`` or
    an image folder), an array or a tensor; refuses fewer than two images or a channel count other than 1
    or 3 before any work."""
    if isinstance(samples, (str, Path)):
        from genzoo.metrics.reference import npz_image_count, npz_labels

        path = Path(samples)
        if path.is_dir():
            from genzoo.data import load_dataset

            dataset = load_dataset(f"folder:{path}")
            count = len(dataset) if limit is None else min(len(dataset), limit)
            labels = getattr(dataset, "labels", None)
            labels = labels[:count] if labels is not None else None
            shape = (dataset.resolution, dataset.resolution, dataset.num_channels)
            _check_sample_shape(str(path), count, shape)
            return iter_dataset_batches(dataset, 256, count), labels, str(path), count, shape
        if not path.is_file():
            raise UserError(f"--samples {path}: no such file or folder")
        labels = npz_labels(path)
        try:
            count, shape = npz_image_count(path)
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
            raise UserError(f"--samples {path}: not an ADM sample file with arr_0 ({err})") from None
        count = count if limit is None else min(count, limit)
        _check_sample_shape(str(path), count, shape)
        labels = labels[:limit] if labels is not None else None
        return iter_npz_images(path, limit=limit), labels, str(path), count, shape
    if isinstance(samples, torch.Tensor):
        from genzoo.io import to_uint8

        samples = to_uint8(samples).cpu().numpy().transpose(0, 2, 3, 1)
    samples = np.asarray(samples)
    if samples.dtype != np.uint8 or samples.ndim != 4:
        raise UserError(f"samples: expected uint8 [N, H, W, C] images, got {samples.dtype} {samples.shape}")
    samples = samples[:limit]
    _check_sample_shape("samples", len(samples), samples.shape[1:])
    return [samples], None, f"{len(samples)} images in memory", len(samples), tuple(samples.shape[1:])


def _check_sample_shape(name: str, count: int, shape: tuple[int, ...]) -> None:
    if len(shape) != 3 or shape[-1] not in (1, 3):
        raise UserError(f"--samples {name}: images of shape {tuple(shape)}; expected [H, W, C], C 1 or 3")
    if count < 2:
        raise UserError(f"--samples {name}: holds {count} image(s); the metrics need at least 2")


def _check_resolution(samples_shape: tuple[int, ...], ref_resolution: int | None, ref: Any,
                      resize: bool) -> None:
    """Refuse samples and reference at different resolutions unless the caller asked for resizing."""
    if resize or ref_resolution is None or samples_shape[0] == ref_resolution:
        return
    raise UserError(f"--ref {ref}: reference images are {ref_resolution} px, the samples "
                    f"{samples_shape[0]} px; pass --resize (resize=True) to compare them resized anyway")


def reference_from_dataset(spec: str, extractor: nn.Module, features: str, count: int = 10_000,
                           keep: int = 10_000, keep_images: int = 0, batch_size: int = 64,
                           resolution: int | None = None) -> tuple[Reference, FeatureSummary]:
    """Statistics of the first ``count`` items of a dataset spec (``genzoo.data.load_dataset``)."""
    from genzoo.data import load_dataset

    dataset = load_dataset(spec, resolution)
    summary = summarize(extractor, iter_dataset_batches(dataset, batch_size, count),
                        spatial=features == "inception", keep=keep, keep_images=keep_images,
                        batch_size=batch_size, total=min(len(dataset), count), desc="reference")
    ref = Reference(features=features, source=spec)
    if not _is_main():
        return ref, summary  # the statistics are on rank 0 (see summarize)
    ref.mu, ref.sigma = summary.pool.mean_cov()
    if features == "inception":
        ref.mu_s, ref.sigma_s = summary.spatial.mean_cov()
    if summary.images:
        ref.images = np.concatenate(summary.images)
    return ref, summary


def evaluate(samples: Any, ref: str | Path | Reference, metrics: Sequence[str] | None = None,
             features: str = "inception", inception: str | Path | None = None,
             classifier: str | Path | None = None, labels: Sequence[int] | np.ndarray | None = None,
             num_samples: int | None = None, ref_count: int = 10_000, pr_count: int = 10_000,
             batch_size: int = 64, device: str | torch.device = "cpu", save_ref: str | Path | None = None,
             extractor: nn.Module | None = None, blocks: int = 1, resize: bool = False,
             dinov2: str | Path | None = None) -> dict[str, Any]:
    """Quality metrics of ``samples`` against ``ref``.

    ``samples``: an ADM ``.npz`` (``arr_0`` uint8 NHWC, labels in ``arr_1``), a uint8 NHWC array, or
    an NCHW tensor (uint8 or float in [-1, 1]). ``ref``: an ADM reference batch ``.npz``, a sample
    ``.npz`` of real images, a dataset spec (``shapes``, ``folder:...``) or a :class:`Reference`.
    ``metrics``: any of fid, sfid, is, pr, kid, acc (default per feature network). ``features``:
    ``inception`` (FID proper; needs ``inception`` or ``$GENZOO_INCEPTION``), ``dinov2`` (FD_DINOv2 as
    EDM2 measures it; needs ``dinov2`` or ``$GENZOO_DINOV2``) or ``shapes`` (the domain classifier);
    ``fid`` is the Fréchet distance in the chosen feature space. ``acc`` compares the
    classifier's prediction with the requested labels (``arr_1`` or ``labels``).

    Returns a dict with ``features``, ``num_samples``, ``num_ref`` and, per metric: ``fd`` (FID
    for Inception features), ``sfid``, ``is``/``is_std``, ``precision``/``recall``,
    ``kid``/``kid_std``, ``accuracy``. Samples and reference images of different resolutions are
    refused unless ``resize`` (the feature network then resizes both to its input size).

    ``blocks`` K > 1 also measures each metric on K disjoint blocks of consecutive samples (seed blocks;
    the remainder of N/K is left out) and adds ``<metric>_blocks`` (the K values), ``_mean``,
    ``_block_std`` (sample standard deviation) and ``_min`` (the minimum, as some papers report).
    """
    start = time.perf_counter()
    metrics = tuple(DEFAULT_METRICS.get(features, ()) if metrics is None else metrics)
    unknown = [m for m in metrics if m not in ALL_METRICS]
    if unknown or features not in FEATURE_KINDS:
        raise UserError(f"--metrics/--features: unknown {', '.join(unknown) or features}; metrics are "
                        f"{', '.join(ALL_METRICS)}, features {', '.join(FEATURE_KINDS)}")
    if features != "inception" and "sfid" in metrics:
        raise UserError("--metrics sfid: sFID is defined on Inception's mixed_6/conv features; "
                        "use --features inception")
    if features == "dinov2" and "is" in metrics:
        raise UserError("--metrics is: the Inception score needs Inception's classifier head; "
                        "use --features inception")
    if blocks < 1:
        raise UserError(f"--blocks: expected a positive number of blocks, got {blocks}")
    batches, file_labels, description, count, shape = _sample_batches(samples, num_samples)
    if {"fid", "sfid", "pr", "kid"} & set(metrics) or save_ref:
        _check_resolution(shape, _reference_resolution(ref), ref, resize)
    extractor = extractor or get_extractor(features, inception, classifier, device, dinov2)
    if "is" in metrics and getattr(extractor, "fc", True) is None:
        raise UserError("--metrics is: this Inception weights file has no classifier head (fc); IS needs one")
    if labels is None:
        labels = file_labels
    from_file = isinstance(samples, (str, Path)) and Path(samples).is_file()
    if labels is None and features == "shapes" and from_file:
        labels = _labels_from_prompts(samples, num_samples)
    needs_pairs = "pr" in metrics or "kid" in metrics
    fake = summarize(extractor, batches, spatial="sfid" in metrics, logits=bool({"is", "acc"} & set(metrics)),
                     keep=pr_count if needs_pairs else 0, batch_size=batch_size, device=device, total=count,
                     desc="samples", blocks=blocks)
    if blocks > 1 and needs_pairs and pr_count < blocks * fake.block_size:
        raise UserError(f"--blocks {blocks} with pr/kid: --pr-count {pr_count} must cover the "
                        f"{blocks * fake.block_size} samples in the blocks")
    result: dict[str, Any] = {"features": features, "num_samples": fake.count, "samples": description}

    ref_needed = bool({"fid", "sfid", "pr", "kid"} & set(metrics))
    real = None
    if ref_needed or save_ref:
        ref, real = _resolve_reference(ref, extractor, features, metrics, ref_count, pr_count, batch_size,
                                       save_ref)
        result["ref"] = ref.source
        result["num_ref"] = real.count if real is not None else None
    if not _is_main():
        return {}  # rank 0 alone holds the features (see summarize)
    if "fid" in metrics:
        result["fd"] = frechet_distance(*fake.pool.mean_cov(), ref.mu, ref.sigma)
    if "sfid" in metrics:
        result["sfid"] = frechet_distance(*fake.spatial.mean_cov(), ref.mu_s, ref.sigma_s)
    if "is" in metrics:
        result["is"], result["is_std"] = inception_score(fake.all_logits())
    if needs_pairs:
        if "pr" in metrics:
            result["precision"], result["recall"] = precision_recall(real.kept(), fake.kept())
        if "kid" in metrics:
            result["kid"], result["kid_std"] = kid(real.kept(), fake.kept())
    if "acc" in metrics:
        result["accuracy"] = _conditional_accuracy(fake.all_logits(), labels, features)
    if blocks > 1:
        result.update(_block_metrics(fake, ref, real, metrics, labels, features, blocks))
    result["seconds"] = round(time.perf_counter() - start, 2)
    return result


def _block_metrics(fake: FeatureSummary, ref: Reference | None, real: FeatureSummary | None,
                   metrics: Sequence[str], labels: Any, features: str, blocks: int) -> dict[str, Any]:
    """Each metric on each of ``blocks`` disjoint blocks of samples: values, mean, std and minimum."""
    size = fake.block_size
    parts = [slice(i * size, (i + 1) * size) for i in range(blocks)]
    per: dict[str, list[float]] = {}
    if "fid" in metrics:
        per["fd"] = [frechet_distance(*stats.mean_cov(), ref.mu, ref.sigma) for stats in fake.pool_blocks]
    if "sfid" in metrics:
        per["sfid"] = [frechet_distance(*stats.mean_cov(), ref.mu_s, ref.sigma_s)
                       for stats in fake.spatial_blocks]
    if "is" in metrics:
        logits = fake.all_logits()
        per["is"] = [inception_score(logits[part], splits=min(10, size))[0] for part in parts]
    if "pr" in metrics or "kid" in metrics:
        kept = fake.kept()
        pairs = [precision_recall(real.kept(), kept[part]) for part in parts] if "pr" in metrics else []
        if pairs:
            per["precision"], per["recall"] = [p for p, _ in pairs], [r for _, r in pairs]
        if "kid" in metrics:
            per["kid"] = [kid(real.kept(), kept[part])[0] for part in parts]
    if "acc" in metrics:
        logits = fake.all_logits()
        per["accuracy"] = [_conditional_accuracy(logits[part], np.asarray(labels)[part], features)
                           for part in parts]
    out: dict[str, Any] = {"blocks": blocks, "block_size": size}
    for key, values in per.items():
        out[f"{key}_blocks"] = values
        out[f"{key}_mean"] = float(np.mean(values))
        out[f"{key}_block_std"] = float(np.std(values, ddof=1))
        out[f"{key}_min"] = float(np.min(values))
    return out


def _reference_resolution(ref: Any) -> int | None:
    """The reference images' resolution where it is known without computing anything."""
    if isinstance(ref, Reference):
        return None if ref.images is None else int(ref.images.shape[1])
    path = Path(str(ref))
    if path.is_file():
        from genzoo.metrics.reference import npz_image_count

        try:
            return int(npz_image_count(path)[1][0])
        except (OSError, KeyError, ValueError, IndexError, zipfile.BadZipFile):
            return None  # statistics only (or unreadable: reported when it is read)
    from genzoo.data import load_dataset

    return int(load_dataset(str(ref)).resolution)


def frechet_metric(ref: str | Path | Reference, features: str = "inception",
                   inception: str | Path | None = None, classifier: str | Path | None = None,
                   ref_count: int = 10_000, batch_size: int = 64, device: str | torch.device = "cpu",
                   dinov2: str | Path | None = None) -> Callable[[torch.Tensor], float]:
    """``images -> Fréchet distance`` to ``ref`` in ``features`` space (FID for inception), with the
    reference resolved once: the held-out metric of a search over sampling settings."""
    from genzoo.train.distributed import local_only

    extractor = get_extractor(features, inception, classifier, device, dinov2)
    with local_only():  # every rank searches whole, so all of them choose the same settings
        reference, _ = _resolve_reference(ref, extractor, features, ("fid",), ref_count, 0, batch_size, None)

    def metric(images: torch.Tensor) -> float:
        with local_only():
            return float(evaluate(images, reference, ["fid"], features, batch_size=batch_size, device=device,
                                  extractor=extractor)["fd"])

    return metric


def _labels_from_prompts(path: str | Path, limit: int | None) -> list[int] | None:
    """The shapes classes a text-conditional sample file's ``prompts`` ask for (−1 where none)."""
    from genzoo.data.shapes import caption_class
    from genzoo.metrics.reference import npz_prompts

    prompts = npz_prompts(path)
    return None if prompts is None else [caption_class(p) for p in prompts[:limit]]


def _conditional_accuracy(logits: torch.Tensor, labels: Any, features: str) -> float:
    """Fraction of samples the domain classifier assigns to the class they were generated for."""
    if features != "shapes":
        raise UserError("--metrics acc: conditional accuracy needs a classifier of the dataset's classes; "
                        "use --features shapes")
    if labels is None:
        raise UserError("--metrics acc: the samples have no requested labels (arr_1 in the .npz, or prompts "
                        "naming a shape and a colour)")
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64).reshape(-1)
    if len(labels) != len(logits):
        raise UserError(f"--metrics acc: {len(labels)} labels for {len(logits)} samples")
    return float((logits.argmax(1) == labels).double().mean())


def _resolve_reference(ref: str | Path | Reference, extractor: nn.Module, features: str,
                       metrics: Sequence[str], ref_count: int, pr_count: int, batch_size: int,
                       save_ref: str | Path | None) -> tuple[Reference, FeatureSummary | None]:
    """A :class:`Reference` in the right feature space, plus the summary of its images if they were run."""
    needs_pairs = "pr" in metrics or "kid" in metrics
    if not isinstance(ref, Reference):
        if Path(ref).is_file() or (str(ref).endswith(".npz") and ":" not in str(ref)):
            ref = load_reference(ref)
        else:
            keep_images = ref_count if save_ref else 0
            ref, real = reference_from_dataset(str(ref), extractor, features, ref_count,
                                               pr_count if needs_pairs else 0, keep_images, batch_size)
            if save_ref and _is_main():
                save_reference(save_ref, ref)
            return ref, real
    stats_usable = ref.features == features and ref.mu is not None and (
        "sfid" not in metrics or ref.mu_s is not None)
    real = None
    if not stats_usable or needs_pairs:
        if ref.images is None:
            what = (f"statistics of '{ref.features}' features" if ref.features != features
                    else "no sFID statistics (mu_s, sigma_s)" if ref.mu is not None else "no statistics")
            raise UserError(f"--ref {ref.source}: has {what} and no images (arr_0) to compute "
                            f"{'precision/recall/KID' if needs_pairs else features + ' statistics'} from")
        real = summarize(extractor, [ref.images[:ref_count]], spatial=features == "inception",
                         keep=pr_count if needs_pairs else 0, batch_size=batch_size,
                         total=min(len(ref.images), ref_count), desc="reference")
        if not stats_usable and _is_main():
            ref = Reference(features=features, images=ref.images, source=ref.source)
            ref.mu, ref.sigma = real.pool.mean_cov()
            if features == "inception":
                ref.mu_s, ref.sigma_s = real.spatial.mean_cov()
    if save_ref and _is_main():
        save_reference(save_ref, ref)
    return ref, real


def _is_main() -> bool:
    from genzoo.train.distributed import Distributed

    return Distributed.current().is_main
