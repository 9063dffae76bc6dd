"""``genzoo edit {inpaint,colorize,superres,stroke,interpolate,denoise}``: zero-shot editing with a
consistency or diffusion model (see :mod:`genzoo.edit`). Inputs are ordinary image files; the results are
written as PNGs (``OUT/<op>-<i>.png``) plus ``OUT/grid.png`` (inputs above results)."""

from __future__ import annotations

import argparse
from pathlib import Path

from genzoo import validate as V
from genzoo.checkpoints.record import record_of
from genzoo.seeds import seeds_text

ORDER = 35


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "edit",
        help="zero-shot image editing with a consistency or diffusion model",
        description="Edit images with a trained or converted consistency model (or a "
        "diffusion model through the same denoiser interface).",
    )
    ops = parser.add_subparsers(dest="operation", metavar="OPERATION")
    ops.required = True

    def common(name: str, help_text: str, images: bool = True) -> argparse.ArgumentParser:
        p = ops.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--ckpt", required=True, help="run, checkpoint or converted model directory")
        if images:
            p.add_argument(
                "--image",
                action="append",
                required=True,
                help="input image file (repeat for several); must match the model's resolution",
            )
        p.add_argument("--out", required=True, help="output directory")
        p.add_argument("--seeds", default=None, type=seeds_text,
            help="one seed per image (default 0, 1, ...)")
        p.add_argument(
            "--steps",
            type=V.positive_int,
            default=None,
            help="network evaluations (consistency default 10 for inpaint/colorize/superres, 1 for "
            "stroke/denoise; diffusion default 32); with --ts the grid size",
        )
        p.add_argument("--ts", default=None, help="consistency models: grid indices, e.g. 0,10,20,39")
        p.add_argument(
            "--class",
            dest="class_label",
            type=V.nonnegative_int,
            default=None,
            help="class label for a class-conditional model (default: drawn from the seed)",
        )
        p.add_argument("--device", type=V.device_or_auto, default="auto",
                       help="torch device (default auto: CUDA when available)")
        p.add_argument("--batch", type=V.positive_int, default=64,
                       help="images per batch (default 64); under torchrun the batches are shared")
        p.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA ones")
        p.set_defaults(func=run)
        return p

    p = common("inpaint", "fill the white region of --mask; pixels outside it are kept exactly")
    p.add_argument(
        "--mask", required=True, help="mask image: white (>127) = region to generate, black = keep"
    )
    common("colorize", "colour grayscale images, keeping their luma (.2989 R + .587 G + .114 B)")
    p = common("superres", "upsample by patch averaging: each factor x factor patch keeps its input mean")
    p.add_argument(
        "--factor",
        type=V.positive_int,
        required=True,
        help="upsampling factor; inputs at the model's resolution are first averaged down by it",
    )
    p = common("stroke", "stroke-guided generation (SDEdit): noise a painting to --sigma and denoise it")
    p.add_argument("--sigma", type=V.positive_float, default=20.0,
        help="noise level to start from (default 20)")
    p = common("interpolate", "spherical interpolation between the noise of two seeds", images=False)
    p.add_argument("--num", type=V.int_range(2), default=8,
        help="images along the path, ends included (default 8)")
    p = common("denoise", "remove Gaussian noise of standard deviation --sigma (images in [-1, 1] units)")
    p.add_argument("--sigma", type=V.nonnegative_float, required=True,
        help="noise standard deviation of the inputs")
    p.add_argument("--add-noise", action="store_true", help="add that noise first (to try the model out)")


def _read_images(paths: list[str], channels: int, device: str):
    import numpy as np
    import torch

    from genzoo.errors import UserError
    from genzoo.io import load_image

    arrays = [load_image(path, channels) for path in paths]
    sizes = {a.shape[:2] for a in arrays}
    if len(sizes) != 1:
        raise UserError(f"--image: all images must have one size, got {sorted(sizes)}")
    from genzoo.io.images import from_uint8

    batch = from_uint8(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2))
    return batch.to(device)


def run(args: argparse.Namespace) -> int:
    import torch

    from genzoo import edit
    from genzoo.api import _labels_for_seeds, load
    from genzoo.consistency.sampling import parse_ts
    from genzoo.errors import UserError
    from genzoo.io import atomic_folder, save_grid, save_image
    from genzoo.progress import progress
    from genzoo.seeds import batches, parse_seeds
    from genzoo.train.distributed import map_in_order, process_group

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file; expected a folder for the edited images")
    with process_group(args.device) as (device, group):
        model = load(args.ckpt, ema=not args.raw, device=device)
        from genzoo.diffusion.samplers import is_denoiser

        if not is_denoiser(model):
            raise UserError(
                f"--ckpt {args.ckpt}: editing needs a consistency or diffusion model (a denoiser), got a "
                f"{record_of(model).family} model"
            )
        config = record_of(model).config
        channels = int(config.get("channels") or 3)
        op = args.operation
        ts = parse_ts(args.ts)
        steps = args.steps
        if ts is not None and steps is None:
            steps = int(config.get("num_scales") or 40)
        resolution = int(config.get("resolution") or model.resolution)
        if op == "superres" and resolution % args.factor:
            raise UserError(f"--factor {args.factor}: must divide the model's resolution {resolution}")
        if group.is_main:
            from genzoo.cli._summary import summary_line

            print(summary_line(f"edit {op}", args.ckpt, model, device, f"{group.world} process(es)"))

        if op == "interpolate":
            seeds = parse_seeds(args.seeds or "0,1")
            if len(seeds) != 2:
                raise UserError(f"--seeds: interpolate needs exactly two seeds, got {args.seeds!r}")
            labels = _labels(config, [seeds[0]] * args.num, args.class_label, device, _labels_for_seeds)
            alphas = [i / (args.num - 1) for i in range(args.num)]
            results = edit.interpolate(
                model, seeds[0], seeds[1], alphas, steps=steps, ts=ts, class_labels=labels, device=device
            ) if group.is_main else None
            inputs = None
        else:
            images = _read_images(args.image, channels, device)
            seeds = parse_seeds(args.seeds) if args.seeds else list(range(len(images)))
            if len(seeds) != len(images):
                raise UserError(f"--seeds: {len(seeds)} seeds for {len(images)} images")
            labels = _labels(config, seeds, args.class_label, device, _labels_for_seeds)
            mask = None
            if op == "inpaint":
                mask = _read_images([args.mask], 1, device)[:, :1] > 0
                if tuple(mask.shape[-2:]) != tuple(images.shape[-2:]):
                    raise UserError(
                        f"--mask {args.mask}: is {mask.shape[-1]}x{mask.shape[-2]}, the images are "
                        f"{images.shape[-1]}x{images.shape[-2]}"
                    )

            def work(positions: list[int]):
                index = torch.tensor(positions, device=device)
                part_labels = None if labels is None else labels[index]
                part_seeds = [seeds[i] for i in positions]
                shown, edited = _edit_batch(args, model, op, images[index], part_seeds, part_labels, mask,
                                            steps, ts, device)
                return shown.cpu(), edited.cpu()

            bar = progress(len(images), f"edit {op}", main_process=group.is_main)
            pieces = []
            for positions, piece in map_in_order(batches(range(len(images)), args.batch), work, group):
                if piece is not None:
                    pieces.append(piece)
                bar.update(len(positions))
            bar.close()
            inputs = torch.cat([p[0] for p in pieces]) if pieces else None
            results = torch.cat([p[1] for p in pieces]) if pieces else None

    if not group.is_main:
        return 0
    with atomic_folder(out, merge=True) as tmp:  # the images appear together, after all were made
        for i, image in enumerate(results):
            save_image(image.clamp(-1, 1), tmp / f"{op}-{i:03d}.png")
        grid = results if inputs is None else torch.cat([inputs.clamp(-1, 1), results.clamp(-1, 1)])
        save_grid(grid, tmp / "grid.png", nrow=len(results))
    print(f"{op}: {len(results)} images -> {out}/{op}-*.png, grid {out / 'grid.png'}")
    return 0


def _edit_batch(args, model, op, images, seeds, labels, mask, steps, ts, device):
    """(inputs as shown in the grid, results) of one batch of images."""
    import torch

    from genzoo import edit
    from genzoo.seeds import StackedRandomGenerator

    rng = StackedRandomGenerator(device, seeds)
    resolution = int(record_of(model).config.get("resolution") or model.resolution)
    if op == "inpaint":
        inputs = torch.where(mask, torch.zeros_like(images), images)
        return inputs, edit.inpaint(model, images, mask, rng, steps, ts, labels)
    if op == "colorize":
        inputs = edit.luma(images).expand(-1, 3, -1, -1) if images.shape[1] == 3 else images
        return inputs, edit.colorize(model, images, rng, steps, ts, labels)
    if op == "superres":
        low = edit.patch_means(images, args.factor) if images.shape[-1] == resolution else images
        inputs = torch.nn.functional.interpolate(low, scale_factor=resolution // low.shape[-1],
                                                 mode="nearest")
        return inputs, edit.superres(model, low, args.factor, rng, steps, ts, labels)
    if op == "stroke":
        return images, edit.stroke(model, images, args.sigma, rng, steps, labels)
    noisy = edit.noise_image(images, args.sigma, rng) if args.add_noise else images
    rng = StackedRandomGenerator(device, seeds)
    return noisy.clamp(-1, 1), edit.denoise(model, noisy, args.sigma, rng, steps, labels)


def _labels(config, seeds, class_label, device, labels_for_seeds):
    import torch

    labels = labels_for_seeds(seeds, class_label, int(config.get("num_classes", 0) or 0))
    return None if labels is None else torch.tensor(labels, device=device)
