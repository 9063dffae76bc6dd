"""``genzoo phema``: post-hoc EMA (EDM2) — any EMA length reconstructed from a run's stored snapshots."""

from __future__ import annotations

import argparse

ORDER = 25


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "phema",
        help="reconstruct any EMA length of a finished run (post-hoc EMA)",
        description="Reconstruct the power-function EMA of relative length --std (σ_rel, EDM2) from the "
                    "snapshots a run stored in RUN/phema/, as a model directory for genzoo sample / eval.",
    )
    parser.add_argument("run", metavar="RUN", help="training run directory (with phema/ snapshots)")
    parser.add_argument("--std", type=float, help="relative EMA length σ_rel, e.g. 0.13")
    parser.add_argument("--sweep", help="LO:HI:N: N evenly spaced lengths, one model each in OUT/std-0.XXX")
    parser.add_argument("--at-kimg", type=float,
                        help="reconstruct at this point of training (default: the newest snapshot)")
    parser.add_argument("--out", required=True, help="model directory (--std) or folder of models (--sweep)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from genzoo.api import posthoc_ema

    paths = posthoc_ema(args.run, args.out, std=args.std, sweep=args.sweep, at_kimg=args.at_kimg)
    for path in paths:
        print(path)
    return 0
