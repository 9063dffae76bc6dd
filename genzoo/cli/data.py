"""``genzoo data info|export``: inspect a dataset spec, or convert it to an EDM zip or ADM npz."""

from __future__ import annotations

import argparse
import sys

from genzoo import validate as V

ORDER = 10


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="dataset spec: shapes[:RES], digits[:RES], folder:PATH, zip:PATH, "
                                     "npz:PATH, cifar10:PATH, mnist:PATH (see docs/data.md)")
    parser.add_argument("--resolution", type=V.int_range(4),
                        help="resize (ADM centre-crop semantics) to this many pixels")
    parser.add_argument("--skip-bad", action="store_true", help="skip unreadable images (and count them) "
                                                                "instead of stopping at the first")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="inspect or convert datasets",
                                   description="Inspect a dataset or convert it to another format.")
    commands = parser.add_subparsers(dest="data_command", metavar="ACTION")
    info = commands.add_parser("info", help="print count, resolution, channels, classes (and a grid)",
                               description="Print what a dataset spec holds; --grid saves its first images.")
    _add_common(info)
    info.add_argument("--grid", help="write a PNG grid of the first images here")
    info.add_argument("--grid-count", type=V.positive_int, default=64, help="images in the grid (default 64)")
    info.set_defaults(func=run_info)
    export = commands.add_parser("export", help="write a dataset as an EDM .zip or an ADM .npz",
                                 description="Convert any dataset spec to an EDM/StyleGAN zip (OUT.zip) or "
                                             "an ADM sample file (OUT.npz), streaming.")
    _add_common(export)
    export.add_argument("out",
                        help="output file: .zip (EDM layout, PNG + dataset.json) or .npz (arr_0, arr_1)")
    export.add_argument("--max-items", type=V.positive_int, help="export only the first N items")
    export.add_argument("--batch", type=V.positive_int, default=256,
        help="images decoded per batch (default 256)")
    export.add_argument("--workers", type=V.nonnegative_int, default=0,
        help="decoding processes (default 0: in-process)")
    export.set_defaults(func=run_export)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def describe(dataset) -> list[str]:
    """The lines ``genzoo data info`` prints."""
    lines = [f"items:      {len(dataset)}", f"resolution: {dataset.resolution}",
             f"channels:   {dataset.num_channels}"]
    classes = f"classes:    {dataset.num_classes}"
    if dataset.num_classes and dataset.class_names:
        names = ", ".join(dataset.class_names[:8]) + (", ..." if len(dataset.class_names) > 8 else "")
        classes += f" ({names})"
    elif not dataset.num_classes:
        classes += " (unlabeled)"
    lines.append(classes)
    if dataset.captions is not None and len(dataset.captions):
        lines.append(f"captions:   yes, e.g. {dataset.captions[0]!r}")
    skipped = getattr(dataset, "skipped", None)
    if skipped:
        lines.append(f"skipped:    {len(skipped)} unreadable file(s), e.g. {skipped[0]}")
    return lines


def run_info(args: argparse.Namespace) -> int:
    import torch

    from genzoo.data import load_dataset
    from genzoo.io import check_image_name, save_grid

    if args.grid:
        check_image_name(args.grid)
    dataset = load_dataset(args.spec, args.resolution, skip_bad=args.skip_bad)
    print(f"spec:       {args.spec}")
    print("\n".join(describe(dataset)))
    if args.grid:
        count = min(args.grid_count, len(dataset))
        images = torch.stack([dataset[i][0] for i in range(count)])
        scale = max(1, 64 // dataset.resolution)
        print(f"grid:       {save_grid(images, args.grid, scale=scale)}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from genzoo.data import load_dataset
    from genzoo.data.export import export_dataset
    from genzoo.io import check_output_file

    check_output_file(args.out, "OUT")
    dataset = load_dataset(args.spec, args.resolution, skip_bad=args.skip_bad)
    total = len(dataset) if args.max_items is None else min(args.max_items, len(dataset))
    tty = sys.stderr.isatty()

    def progress(done: int) -> None:
        if tty:
            print(f"\rexported {done}/{total}", end="", file=sys.stderr, flush=True)

    count = export_dataset(dataset, args.out, batch_size=args.batch, limit=args.max_items,
                           workers=args.workers, on_progress=progress)
    if tty:
        print(file=sys.stderr)
    skipped = getattr(dataset, "skipped", None)
    print(f"wrote {count} images ({dataset.resolution}x{dataset.resolution}, {dataset.num_channels} "
          f"channel(s), {dataset.num_classes} classes) to {args.out}"
          + (f"; skipped {len(skipped)} unreadable" if skipped else ""))
    return 0
