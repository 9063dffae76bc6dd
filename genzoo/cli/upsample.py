"""``genzoo upsample``: a trained GigaGAN upsampler applied to any images (ADM .npz or image files).

    genzoo upsample --upsampler runs/up --input samples.npz --out samples_x4.npz
    genzoo upsample --upsampler runs/up --input cat.png --out cat_x4.png --prompt "a red circle"

Works on the outputs of every genzoo model: diffusion, consistency and GAN sample files alike.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from genzoo import validate as V

ORDER = 35
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "upsample",
        help="super-resolve images with a GigaGAN upsampler",
        description="Apply a GigaGAN upsampler run (genzoo train --family gan --arch gigagan-upsampler) "
        "to an "
        "ADM sample file or an image file.",
    )
    parser.add_argument(
        "--upsampler", required=True, help="run, checkpoint or model directory of the upsampler"
    )
    parser.add_argument(
        "--input", required=True, help="ADM sample file (.npz, arr_0 uint8 NHWC) or an image file"
    )
    parser.add_argument(
        "--out",
        required=True,
        help="output: .npz (labels kept) or an image file (.png: a grid when there are several images)",
    )
    parser.add_argument(
        "--prompt",
        action="append",
        help="prompt for a text-conditioned upsampler: one for all images or repeated once per image",
    )
    parser.add_argument(
        "--seed",
        type=V.nonnegative_int,
        help="draw z and noise per image from seeds SEED+i (default: z = 0, no noise: deterministic)",
    )
    parser.add_argument("--batch", type=V.positive_int, default=64, help="images per batch (default 64)")
    parser.add_argument("--device", type=V.device_or_auto, default="auto",
                        help="torch device (default auto: CUDA when available)")
    parser.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA ones")
    parser.set_defaults(func=run)


def read_input(path: Path):
    """(uint8 NCHW tensor, labels or None) from an .npz sample file or one image file."""
    import numpy as np
    import torch

    from genzoo.errors import UserError
    from genzoo.io import load_image, read_npz_images

    suffix = path.suffix.lower()
    if suffix == ".npz":
        images, labels = read_npz_images(path)
    elif suffix in IMAGE_SUFFIXES:
        images, labels = load_image(path)[None], None
    else:
        raise UserError(
            f"--input {path}: expected a .npz sample file or an image ({', '.join(IMAGE_SUFFIXES)})"
        )
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))), labels


def run(args: argparse.Namespace) -> int:
    from genzoo.api import load
    from genzoo.errors import UserError
    from genzoo.gan.gigagan import upsample
    from genzoo.io import NpzWriter, check_output_file, save_grid, save_image

    out = check_output_file(args.out)
    if out.suffix.lower() != ".npz" and out.suffix.lower() not in IMAGE_SUFFIXES:
        raise UserError(f"--out {out}: expected a .npz file or an image file ({', '.join(IMAGE_SUFFIXES)})")
    images, labels = read_input(Path(args.input))
    from genzoo.train.distributed import pick_device

    device = pick_device(args.device)
    model = load(args.upsampler, ema=not args.raw, device=device)
    from genzoo.cli._summary import summary_line

    print(summary_line("upsample", args.upsampler, model, device, f"{len(images)} images"))
    start = time.perf_counter()
    seeds = list(range(args.seed, args.seed + len(images))) if args.seed is not None else None
    result = upsample(model, images, prompts=args.prompt, seeds=seeds, batch_size=args.batch)
    seconds = time.perf_counter() - start
    if out.suffix.lower() == ".npz":
        with NpzWriter(out) as writer:
            writer.write(result, labels)
    elif len(result) == 1:
        save_image(result[0], out)
    else:
        save_grid(result, out)
    h, w = images.shape[-2:]
    print(
        f"{len(result)} images {h}x{w} -> {result.shape[-2]}x{result.shape[-1]}, "
        f"{len(result) / seconds:.2f} images/s, wrote {out}"
    )
    return 0
