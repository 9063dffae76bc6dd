"""``genzoo sample``: images from any trained or converted model, one per seed."""

from __future__ import annotations

import argparse

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
    parser.add_argument("--out", help="ADM sample file to write (.npz: arr_0 uint8 NHWC, arr_1 labels), or "
                                      "a folder for one PNG per seed (DIR/{seed:06d}.png, labels in "
                                      "dataset.json)")
    parser.add_argument("--grid", help="PNG grid of the first 256 images to write")
    parser.add_argument("--batch", type=V.positive_int, default=64, help="images per batch (default 64)")
    parser.add_argument(
        "--class",
        dest="class_label",
        type=V.nonnegative_int,
        action="append",
        help="class label for every image (repeat for one per seed); default: drawn from the seed",
    )
    parser.add_argument("--device", type=V.device_or_auto, default="auto",
                        help="torch device (default auto: CUDA when available)")
    parser.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA ones")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the model for sampling (pays for long runs; docs/performance.md)")
    for name in family_names():
        get_family(name).add_sample_arguments(parser)
    parser.set_defaults(func=run)


def sample_options(args: argparse.Namespace) -> dict:
    """The family sampling options (keyword arguments of :func:`genzoo.api.sample`) among parsed flags."""
    return {
        k: v
        for k, v in vars(args).items()
        if k not in {"ckpt", "seeds", "out", "grid", "batch", "class_label", "device", "raw", "func",
                     "command", "quiet"}
    }


def run(args: argparse.Namespace) -> int:
    from genzoo.api import load, write_samples
    from genzoo.errors import UserError
    from genzoo.io import check_image_name, check_output_file
    from genzoo.train.distributed import process_group

    if not args.out and not args.grid:
        raise UserError("sample: give --out FILE.npz (or a folder for one PNG per seed) and/or "
                        "--grid FILE.png")
    if args.out is not None and args.out.endswith(".npz"):
        check_output_file(args.out)
    if args.grid is not None:
        check_image_name(args.grid)
    lo, hi = getattr(args, "sigma_min", None), getattr(args, "sigma_max", None)
    if lo is not None and hi is not None and lo >= hi:
        raise UserError(f"--sigma-min {lo:g} --sigma-max {hi:g}: expected --sigma-min below --sigma-max")
    with process_group(args.device) as (device, group):
        model = load(args.ckpt, ema=not args.raw, device=device, compile=args.compile)
        options = sample_options(args)
        # once, before the clock starts: a search over sampling settings is not part of the sampling cost
        options = get_family(model.config["family"]).prepare_sampling(model, options)
        if group.is_main:
            print(f"genzoo sample: {args.ckpt} on {device}, {group.world} process(es), seeds {args.seeds}, "
                  f"batch {args.batch}")
        report = write_samples(model, args.seeds, out=args.out, grid=args.grid, class_labels=args.class_label,
                               batch_size=args.batch, device=device, **options)
    if group.is_main:
        print(
            f"{report['num_images']} images, NFE {report['nfe']} per image, "
            f"{report['images_per_s']:.2f} images/s"
            + (f", wrote {args.out}" if args.out else "")
            + (f", grid {args.grid}" if args.grid else "")
        )
    return 0
