"""``genzoo features train``: train the domain classifier of the built-in ``shapes`` data."""

from __future__ import annotations

import argparse

from genzoo import validate as V

ORDER = 45


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("features",
                                   help="feature networks for evaluation (train the shapes classifier)",
                                   description="Feature networks used by `genzoo eval --features`.")
    commands = parser.add_subparsers(dest="features_command", metavar="ACTION")
    train = commands.add_parser(
        "train", help="train the shapes classifier (about a minute on 2 CPU cores)",
        description="Train the small CNN classifier of the 16 shapes classes whose features give the "
                    "Fréchet distance and conditional accuracy of `genzoo eval --features shapes`.")
    train.add_argument("--out", help="where to write it (default: the copy shipped inside genzoo)")
    train.add_argument("--count", type=V.positive_int, default=20_000,
        help="training images of shapes (default 20000)")
    train.add_argument("--steps", type=V.positive_int, default=500, help="optimiser steps (default 500)")
    train.add_argument("--batch", type=V.positive_int, default=128, help="batch size (default 128)")
    train.add_argument("--width", type=V.positive_int, default=32,
        help="channels of the first layer (default 32)")
    train.add_argument("--seed", type=V.nonnegative_int, default=0, help="random seed (default 0)")
    train.set_defaults(func=run_train)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def run_train(args: argparse.Namespace) -> int:
    from genzoo.errors import UserError
    from genzoo.io import check_output_file
    from genzoo.metrics.shapes_features import BUNDLED_CLASSIFIER, train_shapes_classifier

    out = args.out or BUNDLED_CLASSIFIER
    check_output_file(out)
    if not str(out).endswith(".safetensors"):
        raise UserError(f"--out {out}: expected a file name ending in .safetensors")
    report = train_shapes_classifier(out, count=args.count, steps=args.steps, batch_size=args.batch,
                                     width=args.width, seed=args.seed)
    print(f"wrote {out} ({report['seconds']} s; validation accuracy {report['val_accuracy_32px']:.3f} "
          f"at 32 px, {report['val_accuracy_16px']:.3f} at 16 px)")
    return 0
