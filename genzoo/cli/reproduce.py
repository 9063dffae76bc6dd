"""``genzoo reproduce``: a published protocol (sampler, settings, seeds, number of samples, reference,
metric) in one command, printing the published number beside the measured one."""

from __future__ import annotations

import argparse
from pathlib import Path

from genzoo import validate as V

ORDER = 45


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reproduce", help="run a published evaluation protocol (genzoo reproduce --list)",
        description="Sample with a paper's protocol and measure it against its reference; docs/reproduce.md.")
    parser.add_argument("preset", nargs="?", help="protocol name (see --list)")
    parser.add_argument("--list", action="store_true", help="list the presets: files, numbers, sources")
    parser.add_argument("--ckpt", help="the converted model directory (see the preset's convert line)")
    parser.add_argument("--ref", help="reference batch (.npz with mu/sigma, or images) or image folder")
    parser.add_argument("--num", type=V.positive_int,
                        help="number of samples (default: the protocol's, 50000)")
    parser.add_argument("--classifier", help="converted classifier directory (classifier-guided presets)")
    parser.add_argument("--out", help="output folder (default reproduce-PRESET)")
    parser.add_argument("--inception", help="FID Inception weights (default $GENZOO_INCEPTION)")
    parser.add_argument("--features", choices=("inception", "shapes"), default="inception",
                        help="feature network (default inception, the protocols' own)")
    parser.add_argument("--dinov2", help="DINOv2 weights (dinov2_vitl14_pretrain.pth): EDM2 presets also "
                                         "measure FD_DINOv2, written to metrics.json as fd_dinov2")
    parser.add_argument("--dinov2-ref", help="reference for FD_DINOv2: DINOv2 statistics (eval --features "
                                             "dinov2 --save-ref) or images; default --ref")
    parser.add_argument("--blocks", type=V.positive_int, default=1,
                        help="error bar over K disjoint seed blocks")
    parser.add_argument("--batch", type=V.positive_int, default=64, help="images per batch (default 64)")
    parser.add_argument("--device", type=V.device_or_auto, default="auto",
                        help="torch device (default auto: CUDA when available)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from genzoo.errors import UserError
    from genzoo.reproduce import PRESETS, format_list

    if args.list:
        print(format_list())
        return 0
    if args.preset not in PRESETS:
        raise UserError(f"reproduce: unknown preset {args.preset!r}; valid: {', '.join(PRESETS)} (--list)")
    if not args.ckpt or not args.ref:
        raise UserError("reproduce: give --ckpt (converted model directory) and --ref (reference batch)")
    preset = PRESETS[args.preset]
    if preset.needs_classifier and not args.classifier:
        raise UserError(f"--classifier: {preset.name} is classifier-guided; convert "
                        f"{preset.needs_classifier} with genzoo convert --from guided-diffusion and pass "
                        "its directory")
    if (args.dinov2 or args.dinov2_ref) and not preset.fd_dinov2:
        raise UserError(f"--dinov2: {preset.name} reports FID only; FD_DINOv2 is measured for the EDM2 "
                        "presets")
    if args.dinov2_ref and not args.dinov2:
        raise UserError("--dinov2-ref: give --dinov2 (the DINOv2 weights) too")
    if args.num is not None and args.num < 2:
        raise UserError(f"--num: expected at least 2 samples, got {args.num}")
    out = Path(args.out or f"reproduce-{preset.name}")
    flags = list(preset.flags) + (["--classifier", args.classifier] if preset.needs_classifier else [])
    num = args.num or preset.num
    sample_args = ["sample", "--ckpt", args.ckpt, "--seeds", f"0-{num - 1}", "--batch", str(args.batch),
                   "--device", args.device, "--out", str(out / "samples.npz"), *flags]
    eval_args = ["eval", "--samples", str(out / "samples.npz"), "--ref", args.ref,
                 "--features", args.features, "--metrics", preset.metric, "--batch", str(args.batch),
                 "--device", args.device,
                 "--blocks", str(args.blocks), "--model", preset.name]
    if args.inception:
        eval_args += ["--inception", args.inception]
    dinov2_args = []
    if args.dinov2:  # a second pass of the samples through EDM2's DINOv2 detector, into its own record
        dinov2_args = [*eval_args, "--features", "dinov2", "--dinov2", args.dinov2, "--metrics", "fid",
                       "--ref", args.dinov2_ref or args.ref, "--out", str(out / "metrics-dinov2.json")]
    if args.quiet:
        for argv in (sample_args, eval_args, dinov2_args):
            argv.extend(["--quiet"] if argv else [])
    from genzoo.api import load
    from genzoo.cli import main
    from genzoo.metrics.record import read_metrics, write_metrics

    family = load(args.ckpt, device="cpu").config.get("family")
    if family != preset.family:
        raise UserError(f"--ckpt {args.ckpt}: is a {family} model; {preset.name} needs a {preset.family} "
                        f"model ({preset.convert})")
    for argv in (sample_args, eval_args, dinov2_args):
        code = main(argv) if argv else 0
        if code:
            return code
    record = read_metrics(out / "metrics.json")
    extra = {"preset": preset.name, "published": preset.published, "published_source": preset.source}
    if dinov2_args:
        dino = read_metrics(out / "metrics-dinov2.json")
        extra.update({key.replace("fd", "fd_dinov2", 1): value for key, value in dino.items()
                      if key == "fd" or key.startswith("fd_")})
    write_metrics(out / "metrics.json", extra)
    measured = record.get("fd")
    spread = ""
    if "fd_mean" in record:
        spread = (f" (mean {record['fd_mean']:.3f} ± {record['fd_block_std']:.3f}, "
                  f"minimum {record['fd_min']:.3f} over {record['blocks']} blocks)")
    published = (f"published {preset.published} ({preset.source})" if preset.published is not None
                 else f"no published number for exactly this protocol ({preset.source})")
    print(f"{preset.name}: measured {args.features} FD {measured:.3f} on {num} samples{spread}; {published}")
    if dinov2_args:
        print(f"{preset.name}: measured FD_DINOv2 {extra['fd_dinov2']:.3f} on {num} samples (EDM2 publishes "
              "FD_DINOv2 for its separate FD_DINOv2-optimal EMA and guidance settings, not this protocol)")
    return 0
