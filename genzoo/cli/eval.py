"""``genzoo eval``: FID, sFID, IS, precision/recall, KID or conditional accuracy of a sample file."""

from __future__ import annotations

import argparse
from pathlib import Path

from genzoo import validate as V

ORDER = 40


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="measure a sample file against a reference (FID, sFID, IS, P/R, KID, accuracy)",
        description="Evaluate an ADM sample file (.npz: arr_0 uint8 NHWC, arr_1 labels) against an ADM "
                    "reference batch or a dataset spec; writes metrics.json and prints a table.")
    parser.add_argument("--samples", required=True,
                        help="sample file (.npz, arr_0 uint8 NHWC [, arr_1 labels]) or an image folder "
                             "(e.g. sample --out DIR's PNGs; labels from its dataset.json)")
    parser.add_argument("--ref", required=True,
                        help="reference: an ADM reference batch REF.npz (mu, sigma, mu_s, sigma_s, arr_0), "
                             "an .npz of real images, an image folder, or a dataset spec such as shapes")
    parser.add_argument("--metrics", help="comma-separated: fid,sfid,is,pr,kid,acc "
                                          "(default fid,sfid,is,pr for inception; fid,pr,acc for shapes)")
    parser.add_argument("--features", choices=("inception", "dinov2", "shapes"), default="inception",
                        help="feature network: inception (FID proper), dinov2 (FD_DINOv2 as EDM2 measures "
                             "it; needs --dinov2) or shapes (the built-in data's classifier); fid is the "
                             "Fréchet distance in the chosen feature space")
    parser.add_argument("--inception",
                        help="FID Inception weights: torch-fidelity's weights-inception-2015-12-05-"
                             "6726825d.pth or pytorch-fid's pt_inception-...; default $GENZOO_INCEPTION")
    parser.add_argument("--dinov2",
                        help="DINOv2 weights for --features dinov2: dinov2_vitl14_pretrain.pth (EDM2's; any "
                             "dinov2_vit{s,b,l,g}14 state dict loads); default $GENZOO_DINOV2")
    parser.add_argument("--classifier", help="shapes classifier (.safetensors); default: the one shipped")
    parser.add_argument("--out",
                        help="metrics.json to write or update (default: metrics.json next to --samples)")
    parser.add_argument("--num-samples", type=V.positive_int, help="use only the first N samples")
    parser.add_argument("--ref-count", type=V.positive_int, default=10_000,
                        help="reference images from a dataset spec (default 10000)")
    parser.add_argument("--pr-count", type=V.positive_int, default=10_000,
                        help="images per side kept for precision/recall and KID (default 10000)")
    parser.add_argument("--save-ref", help="also write the reference statistics (ADM layout) here")
    parser.add_argument("--model", help="model name to record in metrics.json")
    parser.add_argument("--family", help="model family to record in metrics.json")
    parser.add_argument("--nfe", type=V.positive_float, help="network evaluations per image to record")
    parser.add_argument("--batch", type=V.positive_int, default=64,
                        help="images per feature batch (default 64)")
    parser.add_argument("--blocks", type=V.positive_int, default=1,
                        help="also report each metric's mean, std and minimum over K disjoint blocks of "
                             "consecutive samples (seeds); default 1 (off)")
    parser.add_argument("--device", type=V.device_or_auto, default="auto",
                        help="torch device (default auto: CUDA when available)")
    parser.add_argument("--resize", action="store_true",
                        help="compare samples and reference images of different resolutions (each resized to "
                             "the feature network's input); without it a mismatch is an error")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from genzoo.errors import UserError
    from genzoo.io import check_output_file
    from genzoo.metrics import evaluate
    from genzoo.metrics.record import attach_sample_cost, metric_label, write_metrics
    from genzoo.train.distributed import process_group

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    if not Path(args.samples).exists():
        raise UserError(f"--samples {args.samples}: no such file or folder")
    out = Path(args.out) if args.out else Path(args.samples).with_name("metrics.json")
    for flag, path in (("--out", out), ("--save-ref", args.save_ref)):
        if path is not None:  # refused before any work: a metrics run can take hours
            check_output_file(path, flag)
            if not Path(path).parent.is_dir():
                raise UserError(f"{flag} {path}: the folder {Path(path).parent} does not exist")
    if args.save_ref is not None and not str(args.save_ref).endswith(".npz"):
        raise UserError(f"--save-ref {args.save_ref}: expected a file name ending in .npz")
    with process_group(args.device) as (device, group):
        if group.is_main:
            print(f"genzoo eval: {args.samples} against {args.ref} on {device}, {group.world} process(es), "
                  f"{args.features} features")
        result = evaluate(args.samples, args.ref, metrics=metrics, features=args.features,
                          inception=args.inception, classifier=args.classifier, num_samples=args.num_samples,
                          ref_count=args.ref_count, pr_count=args.pr_count, batch_size=args.batch,
                          device=device, save_ref=args.save_ref, blocks=args.blocks, resize=args.resize,
                          dinov2=args.dinov2)
    if not group.is_main:
        return 0
    for key in ("model", "family", "nfe"):
        if getattr(args, key) is not None:
            result[key] = getattr(args, key)
    attach_sample_cost(result, args.samples, out)
    write_metrics(out, result)
    print(format_result_table(result, metric_label))
    print(f"wrote {out}")
    return 0


def format_result_table(result: dict, metric_label) -> str:
    rows = [("features", result["features"]), ("samples", str(result["num_samples"]))]
    if result.get("num_ref") is not None:
        rows.append(("reference images", str(result["num_ref"])))
    for key, std in (("fd", None), ("sfid", None), ("is", "is_std"), ("precision", None), ("recall", None),
                     ("kid", "kid_std"), ("accuracy", None)):
        if key in result:
            value = f"{result[key]:.4f}" + (f" ± {result[std]:.4f}" if std and std in result else "")
            rows.append((metric_label(key, result["features"]), value))
            if f"{key}_blocks" in result:
                rows.append((f"  over {result['blocks']} blocks of {result['block_size']}",
                             f"{result[key + '_mean']:.4f} ± {result[key + '_block_std']:.4f} (mean ± std), "
                             f"minimum {result[key + '_min']:.4f}"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
