"""What the web app's buttons do, as plain functions of their inputs (no gradio here).

Every request is turned into the command line the CLI would run (``genzoo sample ...``,
``genzoo edit ...``) and parsed by the CLI's own parser, so types, choices and defaults are the CLI's and
the options are checked against the model's family as ``genzoo sample`` checks them
(:func:`genzoo.sampling.sample_options`). Edits run ``genzoo edit``'s own function on files in a
private temporary folder. A request keeps its state in local variables only: the one shared object is the
:class:`ModelCache` of loaded models, which hands each model out under its own lock.
"""

from __future__ import annotations

import argparse
import functools
import shlex
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genzoo.checkpoints.record import record_of
from genzoo.errors import UserError

Progress = Callable[[int, int], None]
#: edit operations that take an input image
IMAGE_OPERATIONS = ("inpaint", "colorize", "superres", "stroke", "denoise")


class Cancelled(Exception):
    """The request was cancelled from the page."""


# ------------------------------------------------------------------------------------------------ CLI


def _raise_user_error(message: str) -> None:
    raise UserError(message)


@functools.lru_cache(maxsize=1)
def _cli_parser() -> argparse.ArgumentParser:
    """genzoo's own parser; its usage errors raise :class:`UserError` instead of exiting."""
    from genzoo.cli import build_parser

    parser = build_parser()
    stack = [parser]
    while stack:
        p = stack.pop()
        p.error = _raise_user_error  # type: ignore[method-assign]
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())
    return parser


def parse_cli(argv: Sequence[str]) -> argparse.Namespace:
    """Parse a genzoo command line (without the leading ``genzoo``) as the CLI does."""
    return _cli_parser().parse_args(list(argv))


def command_line(argv: Sequence[str]) -> str:
    return shlex.join(["genzoo", *argv])


# ------------------------------------------------------------------------------------------------ models


class ModelCache:
    """Loaded models by (path, EMA, device), each with a lock held while a request uses it (sampling may
    update a model's state, e.g. BigGAN's standing statistics)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[tuple[str, bool, str], tuple[torch.nn.Module, threading.Lock]] = {}

    def get(self, path: str | Path, ema: bool = True, device: str = "cpu") -> tuple[torch.nn.Module,
                                                                                      threading.Lock]:
        from genzoo.family import load_model

        key = (str(Path(path).resolve()), bool(ema), str(device))
        with self._lock:
            if key not in self._models:
                self._models[key] = (load_model(path, ema=ema, device=device), threading.Lock())
            return self._models[key]


# ------------------------------------------------------------------------------------------------ sample


@dataclass
class SampleResult:
    """One sampling request: uint8 NHWC images, their labels, NFE per image, seconds, the grid (HWC, as
    ``genzoo sample --grid`` writes it) and the equivalent command line."""

    images: np.ndarray
    labels: np.ndarray | None
    nfe: int
    seconds: float
    grid: np.ndarray
    command: str

    @property
    def images_per_second(self) -> float:
        return len(self.images) / max(self.seconds, 1e-9)

    def cost(self) -> str:
        return (f"{len(self.images)} images · NFE {self.nfe} per image · {self.seconds:.3f} s · "
                f"{self.images_per_second:.1f} images/s")


def sample_argv(model: str | Path, seeds: str, class_labels: Sequence[int] | int | None = None,
                flags: Sequence[str] = (), batch: int | None = None, device: str = "cpu",
                grid: str | None = "grid.png") -> list[str]:
    """The ``genzoo sample`` command line of a request."""
    argv = ["sample", "--ckpt", str(model), "--seeds", str(seeds).strip()]
    if isinstance(class_labels, int):
        class_labels = [class_labels]
    for label in class_labels or ():
        argv += ["--class", str(int(label))]
    if batch is not None:
        argv += ["--batch", str(int(batch))]
    argv += ["--device", str(device)]  # always: the CLI's own default is auto
    argv += list(flags)
    return argv + (["--grid", grid] if grid else [])


def run_sample(model: str | Path, seeds: str = "0-15", class_labels: Sequence[int] | int | None = None,
               flags: Sequence[str] = (), batch: int | None = None, device: str = "cpu",
               cache: ModelCache | None = None, progress: Progress | None = None,
               should_stop: Callable[[], bool] | None = None) -> SampleResult:
    """Sample as ``genzoo sample --ckpt MODEL --seeds SEEDS [--class C] [--batch B] FLAGS`` would.

    ``flags`` are the family's sample flags (:func:`genzoo.serve.controls.to_flags`). ``progress`` gets
    (images done, images asked) after each batch; ``should_stop`` is asked then too and stops the
    request with :class:`Cancelled`.
    """
    from genzoo.cli.sample import sample_options
    from genzoo.family import get_family
    from genzoo.io.images import grid_array
    from genzoo.sampling import collect, iter_batches
    from genzoo.sampling import sample_options as checked_options
    from genzoo.seeds import parse_seeds

    argv = sample_argv(model, seeds, class_labels, flags, batch, device)
    args = parse_cli(argv)
    try:
        total = len(parse_seeds(args.seeds))
    except ValueError as err:
        raise UserError(f"--seeds: {err}") from None
    if total > 1024:
        raise UserError(f"--seeds: at most 1024 images per request in the app, got {total}")
    from genzoo.train.distributed import pick_device

    cache = cache or ModelCache()
    args.device = str(pick_device(args.device))  # "auto" (from a caller) -> the device it names
    net, lock = cache.get(args.ckpt, ema=not args.raw, device=args.device)
    family = get_family(record_of(net).family)
    done = 0

    def on_batch(images: torch.Tensor, _labels: Any, _seeds: list[int]) -> None:
        nonlocal done
        done += len(images)
        if progress is not None:
            progress(done, total)
        if should_stop is not None and should_stop():
            raise Cancelled(f"cancelled after {done} of {total} images")

    with lock:
        # as the CLI: checked against the model's family, resolved once before the clock
        options = family.prepare_sampling(net, checked_options(net, None, args.device,
                                                               **sample_options(args)))
        if progress is not None:
            progress(0, total)
        start = time.perf_counter()
        images, labels, nfe = collect(iter_batches(net, args.seeds, options, args.class_label, args.batch,
                                                   args.device), on_batch)
        seconds = time.perf_counter() - start
    nhwc = images.permute(0, 2, 3, 1).numpy()
    return SampleResult(nhwc, labels.numpy() if labels is not None else None, int(nfe), seconds,
                        grid_array(images), command_line(argv))


# ------------------------------------------------------------------------------------------------ edit


@dataclass
class EditResult:
    """One edit: the input as the CLI shows it (None for interpolate), the result images (uint8 HWC) and
    the equivalent command line (input files named as in the request); inpainting adds the mask (bool HW)."""

    inputs: list[np.ndarray] | None
    results: list[np.ndarray]
    seconds: float
    command: str
    mask: np.ndarray | None = None


def _save_png(array: np.ndarray, path: Path) -> str:
    from PIL import Image

    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise UserError(f"{path.name}: expected 8-bit image data, got {array.dtype}")
    Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array).save(path)
    return str(path)


def edit_argv(operation: str, model: str | Path, *, images: Sequence[str] = (), mask: str | None = None,
              out: str = "edit-out", seeds: str | None = None, class_label: int | None = None,
              steps: int | None = None, ts: str | None = None, factor: int | None = None,
              sigma: float | None = None, num: int | None = None, add_noise: bool = False,
              device: str = "cpu") -> list[str]:
    """The ``genzoo edit OPERATION ...`` command line of a request."""
    argv = ["edit", operation, "--ckpt", str(model)]
    for image in images:
        argv += ["--image", image]
    for flag, value in (("--mask", mask), ("--out", out), ("--seeds", seeds), ("--class", class_label),
                        ("--steps", steps), ("--ts", ts), ("--factor", factor), ("--sigma", sigma),
                        ("--num", num)):
        if value is not None and str(value).strip() != "":
            argv += [flag, str(value).strip()]
    if add_noise:
        argv.append("--add-noise")
    argv += ["--device", str(device)]  # always: the CLI's own default is auto
    return argv


def run_edit(operation: str, model: str | Path, image: np.ndarray | None = None,
             mask: np.ndarray | None = None, **options: Any) -> EditResult:
    """Run ``genzoo edit OPERATION`` on an image (uint8 HWC) and a mask (bool HW, True = generate).

    ``options``: seeds, class_label, steps, ts, factor, sigma, num, add_noise, device (the CLI's flags).
    The files live in a private temporary folder, removed afterwards.
    """
    if operation not in (*IMAGE_OPERATIONS, "interpolate"):
        raise UserError(f"edit: unknown operation {operation!r}")
    if operation in IMAGE_OPERATIONS and image is None:
        raise UserError(f"{operation}: give an input image")
    if operation == "inpaint" and (mask is None or not np.asarray(mask).any()):
        raise UserError("inpaint: paint the region to generate on the image first (the mask is empty)")
    with tempfile.TemporaryDirectory(prefix="genzoo-serve-") as tmp:
        folder = Path(tmp)
        files: dict[str, Any] = {}
        if operation in IMAGE_OPERATIONS:
            files["images"] = [_save_png(image, folder / "input.png")]
        if operation == "inpaint":
            mask_image = np.asarray(mask, dtype=bool).astype(np.uint8) * 255
            files["mask"] = _save_png(mask_image, folder / "mask.png")
        argv = edit_argv(operation, model, out=str(folder / "out"), **files, **options)
        args = parse_cli(argv)
        start = time.perf_counter()
        args.func(args)
        seconds = time.perf_counter() - start
        from genzoo.io import load_image

        results = [load_image(p, 3) for p in sorted((folder / "out").glob(f"{operation}-*.png"))]
        inputs = None
        if operation != "interpolate":
            grid = load_image(folder / "out" / "grid.png", 3)
            size = results[0].shape[0]
            inputs = [grid[2:2 + size, 2:2 + size]]  # the grid's first row shows the input as the CLI saw it
    shown = edit_argv(operation, model, out="edit-out",
                      images=["input.png"] if operation in IMAGE_OPERATIONS else (),
                      mask="mask.png" if operation == "inpaint" else None, **options)
    return EditResult(inputs, results, seconds, command_line(shown),
                      np.asarray(mask, dtype=bool) if operation == "inpaint" else None)
