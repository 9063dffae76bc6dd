"""``genzoo demo``: diffusion vs consistency vs GAN on the built-in shapes data, in one report."""

from __future__ import annotations

import argparse

ORDER = 90


def register(subparsers: argparse._SubParsersAction) -> None:
    from genzoo.demo import DEFAULT_MINUTES, RESOLUTIONS

    parser = subparsers.add_parser(
        "demo", help="train, sample and compare diffusion, consistency and GAN models on the shapes data",
        description="Train a class-conditional EDM diffusion model, distil a consistency model from it, "
                    "train a BigGAN and a text-conditional GigaGAN on the built-in shapes data; sample "
                    "each at several costs, measure quality (shapes features: FD, precision/recall, "
                    "conditional accuracy) and cost (NFE, images/s), and write OUT/report.html. "
                    "Running the same command again continues an interrupted demo.")
    parser.add_argument("--out", default="demo-out", help="output directory (default demo-out)")
    parser.add_argument("--minutes", type=float, default=DEFAULT_MINUTES,
                        help="total budget; every stage's share scales with it "
                             f"(default {DEFAULT_MINUTES:g})")
    parser.add_argument("--resolution", type=int, default=16, choices=RESOLUTIONS,
                        help="image resolution (default 16)")
    parser.add_argument("--samples", type=int, help="images per configuration (default 512 x minutes / 15)")
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads (default: torch's; 1 is faster on a machine shared with "
                             "other jobs)")
    parser.add_argument("--no-gigagan", dest="gigagan", action="store_false", help="leave out GigaGAN")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from genzoo.demo import run_demo

    run_demo(args.out, minutes=args.minutes, resolution=args.resolution, num_samples=args.samples,
             threads=args.threads, gigagan=args.gigagan)
    return 0
