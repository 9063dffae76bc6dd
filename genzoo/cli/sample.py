"""``genzoo sample``: images from any trained or converted model, one per seed."""

from __future__ import annotations

import argparse

from genzoo import validate as V
from genzoo.checkpoints.record import record_of
from genzoo.family import family_names, get_family
from genzoo.options import add_arguments
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
    add_family_flags(parser)
    parser.set_defaults(func=run)


#: the flags of `genzoo sample` itself (the rest are the model family's sample options)
COMMON = ("ckpt", "seeds", "out", "grid", "batch", "class_label", "device", "raw", "compile", "func",
          "command", "quiet")


def add_family_flags(parser: argparse.ArgumentParser) -> None:
    """Every family's sample options, one group per family for --help. They are parsed without defaults
    (None: not given): once the model is loaded, its family checks the ones given
    (:meth:`genzoo.family.Family.sample_options`), so an option it does not take is an error."""
    for name in family_names():
        family = get_family(name)
        for kind in family.sample_option_types():
            if not kind.names():
                continue
            group = parser.add_argument_group(f"{kind.family} sample options")
            add_arguments(group, kind, unset_defaults=True)


def sample_options(args: argparse.Namespace) -> dict:
    """The sample options given on the command line (keyword arguments of :func:`genzoo.api.sample`)."""
    return {k: v for k, v in vars(args).items() if k not in COMMON and not k.startswith("_")}


def run(args: argparse.Namespace) -> int:
    from genzoo.api import load, write_samples
    from genzoo.api import sample_options as sample_options_api
    from genzoo.cli._summary import summary_line
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
    with process_group(args.device) as (device, group):
        model = load(args.ckpt, ema=not args.raw, device=device, compile=args.compile)
        family = get_family(record_of(model).family)
        # checked against the model's family, then resolved once before the clock starts (a search over
        # sampling settings is not part of the sampling cost)
        options = family.prepare_sampling(model, sample_options_api(model, None, device,
                                                                    **sample_options(args)))
        if group.is_main:
            print(summary_line("sample", args.ckpt, model, device,
                               f"{group.world} process(es), seeds {args.seeds}, batch {args.batch}",
                               options.explicit()))
        report = write_samples(model, args.seeds, out=args.out, grid=args.grid, class_labels=args.class_label,
                               batch_size=args.batch, device=device, options=options)
    if group.is_main:
        print(
            f"{report['num_images']} images, NFE {report['nfe']} per image, "
            f"{report['images_per_s']:.2f} images/s"
            + (f", wrote {args.out}" if args.out else "")
            + (f", grid {args.grid}" if args.grid else "")
        )
    return 0
