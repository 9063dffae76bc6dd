"""``genzoo reproduce``: a published protocol (sampler, settings, seeds, number of samples, reference,
metric) in one command, printing the published number beside the measured one."""

from __future__ import annotations

import argparse
from pathlib import Path

from genzoo import validate as V
from genzoo.checkpoints.record import record_of

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
    parser.add_argument("--guide-model", help="converted guiding model directory (EDM2's guided presets)")
    parser.add_argument("--vae", help="local diffusers AutoencoderKL folder for latent presets (unless "
                                      "recorded at conversion)")
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
    if preset.needs_guide and not args.guide_model:
        raise UserError(f"--guide-model: {preset.name} is guided by {preset.needs_guide}; convert it with "
                        "genzoo convert --from edm2 and pass its directory")
    for flag, value in (("--guide-model", args.guide_model), ("--classifier", args.classifier)):
        needed = preset.needs_guide if flag == "--guide-model" else preset.needs_classifier
        if value and not needed:
            raise UserError(f"{flag}: {preset.name} takes no {flag[2:]} "
                            f"(its protocol: {' '.join(preset.flags)})")
    if args.vae and not preset.latent:
        raise UserError(f"--vae: {preset.name} is a pixel-space protocol and takes no VAE")
    if (args.dinov2 or args.dinov2_ref) and not preset.fd_dinov2:
        raise UserError(f"--dinov2: {preset.name} reports FID only; FD_DINOv2 is measured for the EDM2 "
                        "presets")
    if args.dinov2_ref and not args.dinov2:
        raise UserError("--dinov2-ref: give --dinov2 (the DINOv2 weights) too")
    if args.num is not None and args.num < 2:
        raise UserError(f"--num: expected at least 2 samples, got {args.num}")
    out = Path(args.out or f"reproduce-{preset.name}")
    flags = list(preset.flags) + (["--classifier", args.classifier] if preset.needs_classifier else [])
    flags += (["--guide-model", args.guide_model] if preset.needs_guide else [])
    flags += (["--vae", args.vae] if args.vae else [])
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
    from genzoo.checkpoints import read_json, resolve_model_dir
    from genzoo.cli import main
    from genzoo.metrics.record import read_metrics, write_metrics

    ckpt = Path(args.ckpt)  # a model directory's config.json says its kind without building the network
    config = (read_json(resolve_model_dir(ckpt) / "config.json") if ckpt.is_dir()
              else record_of(load(args.ckpt, device="cpu")).config)
    _check_kind(config, preset, args.ckpt)
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


def _check_kind(config: dict, preset, path: str) -> None:
    """The model directory must hold what the protocol was published for: the family, the released format
    (``source`` in config.json, written by ``genzoo convert``), class conditioning and pixel vs latent."""
    from genzoo.errors import UserError

    family, source = config.get("family"), config.get("source")
    where = f"--ckpt {path}: "
    if family != preset.family:
        raise UserError(f"{where}is a {family} model; {preset.name} needs a {preset.family} model "
                        f"({preset.convert})")
    if source != preset.source_format:
        raise UserError(f"{where}was converted from {source or 'nothing (a genzoo-trained model)'}; "
                        f"{preset.name} needs one converted from {preset.source_format} ({preset.convert})")
    classes = int(config.get("num_classes") or 0)
    if bool(classes) != preset.conditional:
        raise UserError(f"{where}has {classes} classes; {preset.name} needs "
                        f"{'a class-conditional' if preset.conditional else 'an unconditional'} model")
    latent = (config.get("encoder") or {}).get("name") == "stability_vae"
    if latent != preset.latent:
        raise UserError(f"{where}is a {'latent' if latent else 'pixel-space'} model; {preset.name} needs a "
                        f"{'latent' if preset.latent else 'pixel-space'} one")
