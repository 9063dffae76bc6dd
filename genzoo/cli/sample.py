"""``genzoo sample``: images from any trained or converted model, one per seed."""

from __future__ import annotations

import argparse
import time

from genzoo import validate as V
from genzoo.family import family_names, get_family
from genzoo.seeds import seeds_text

ORDER = 30


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sample",
        help="generate images from a run, checkpoint or converted model",
        description="Generate one image per seed; the image for a seed does not depend on the batch size.",
    )
    parser.add_argument(
        "--ckpt", required=True, help="run directory, checkpoint directory or converted model"
    )
    parser.add_argument("--seeds", default="0-63", type=seeds_text,
                        help="seeds, e.g. 0-63,100 (default 0-63)")
    parser.add_argument("--out", help="ADM sample file to write (.npz: arr_0 uint8 NHWC, arr_1 labels)")
    parser.add_argument("--grid", help="PNG grid to write")
    parser.add_argument("--batch", type=V.positive_int, default=64, help="images per batch (default 64)")
    parser.add_argument(
        "--class",
        dest="class_label",
        type=V.nonnegative_int,
        action="append",
        help="class label for every image (repeat for one per seed); default: drawn from the seed",
    )
    parser.add_argument("--device", type=V.device, default="cpu", help="torch device (default cpu)")
    parser.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA ones")
    for name in family_names():
        get_family(name).add_sample_arguments(parser)
    parser.set_defaults(func=run)


def sample_options(args: argparse.Namespace) -> dict:
    """The family sampling options (keyword arguments of :func:`genzoo.api.sample`) among parsed flags."""
    return {
        k: v
        for k, v in vars(args).items()
        if k
        not in {"ckpt", "seeds", "out", "grid", "batch", "class_label", "device", "raw", "func", "command"}
    }


def run(args: argparse.Namespace) -> int:
    from genzoo.api import load, sample
    from genzoo.errors import UserError
    from genzoo.io import NpzWriter, check_image_name, check_output_file, save_grid

    if not args.out and not args.grid:
        raise UserError("sample: give --out FILE.npz and/or --grid FILE.png")
    if args.out is not None:
        check_output_file(args.out)
        if not args.out.endswith(".npz"):
            raise UserError(f"--out {args.out}: expected a file name ending in .npz")
    if args.grid is not None:
        check_image_name(args.grid)
    lo, hi = getattr(args, "sigma_min", None), getattr(args, "sigma_max", None)
    if lo is not None and hi is not None and lo >= hi:
        raise UserError(f"--sigma-min {lo:g} --sigma-max {hi:g}: expected --sigma-min below --sigma-max")
    model = load(args.ckpt, ema=not args.raw, device=args.device)
    options = sample_options(args)
    # once, before the clock starts: a search over sampling settings is not part of the sampling cost
    family = get_family(model.config["family"])
    options = family.prepare_sampling(model, options)
    # The file appears only when every image is made: a failure or Ctrl-C leaves what --out held.
    writer = NpzWriter(args.out) if args.out else None
    start = time.perf_counter()
    try:
        images, labels, nfe = sample(
            model,
            args.seeds,
            class_labels=args.class_label,
            batch_size=args.batch,
            device=args.device,
            on_batch=(lambda im, lab, seeds: writer.write(im, lab, family.prompts_for(model, seeds, options)))
            if writer else None,
            **options,
        )
        if args.grid:
            save_grid(images, args.grid)
        if writer is not None:
            writer.close()
    except BaseException:
        if writer is not None:
            writer.discard()
        raise
    seconds = time.perf_counter() - start
    print(
        f"{len(images)} images, NFE {nfe} per image, {len(images) / seconds:.2f} images/s"
        + (f", wrote {args.out}" if args.out else "")
        + (f", grid {args.grid}" if args.grid else "")
    )
    return 0
