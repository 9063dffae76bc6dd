"""GigaGAN on CPU: does a few minutes of training follow colour words? And how fast are G and the upsampler?

    python benchmarks/gigagan.py                      # 320 G steps (a few minutes idle), 2 min of upsampler
    python benchmarks/gigagan.py --text-encoder minilm --steps 0 --minutes 10

1. Trains ``--arch gigagan`` on shapes captions for ``--steps`` (a fixed amount of training, whatever
   the machine's load; or ``--steps 0 --minutes M``), then samples ``--samples`` images
   for "a ... red <shape> ..." and as many for "a ... blue <shape> ..." prompts (same seeds, shapes
   cycling) and prints, per requested colour, the circular mean hue of the foreground pixels
   (chroma > 60/255, as the dataset's colour rule) and the fraction of samples whose colour by
   ``genzoo.data.shapes.classify_color`` is the requested one (chance: 25%).
2. Trains ``--arch gigagan-upsampler`` (x4) for ``--upsampler-minutes`` and prints its PSNR on
   held-out shapes against bilinear upsampling.
3. Prints images/s of the generator and the upsampler (batch 64, no grad, fp32).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.colors import rgb_to_hsv

import genzoo
from genzoo import nets
from genzoo.data import load_dataset
from genzoo.data.shapes import COLOR_NAMES, SHAPE_NAMES, classify_color
from genzoo.train.engine import train as run_training  # genzoo.train is shadowed by the subpackage

TARGET_HUES = {"red": 0.0, "blue": 227.0}  # hue of the dataset's red (220,30,30) and blue (35,70,225)


def foreground_hue(images_uint8: torch.Tensor) -> np.ndarray:
    """Circular mean hue (degrees) of each image's coloured pixels (chroma > 60); NaN if none."""
    x = images_uint8.permute(0, 2, 3, 1).numpy().astype(np.float64)
    chroma = x.max(-1) - x.min(-1)
    hue = rgb_to_hsv(x / 255.0)[..., 0] * 2 * math.pi
    out = []
    for h, c in zip(hue, chroma):
        weight = np.where(c > 60, c, 0.0)
        if weight.sum() == 0:
            out.append(float("nan"))
            continue
        angle = math.atan2((weight * np.sin(h)).sum(), (weight * np.cos(h)).sum())
        out.append(math.degrees(angle) % 360)
    return np.array(out)


def circular_mean(degrees: np.ndarray) -> float:
    d = np.radians(degrees[~np.isnan(degrees)])
    return math.degrees(math.atan2(np.sin(d).mean(), np.cos(d).mean())) % 360 if len(d) else float("nan")


def hue_distance(a: float, b: float) -> float:
    d = abs(a - b) % 360
    return min(d, 360 - d)


def prompts_for(color: str, n: int) -> list[str]:
    return [
        f"a medium {color} {SHAPE_NAMES[i % len(SHAPE_NAMES)]} in the center on a gray background"
        for i in range(n)
    ]


def train(args: argparse.Namespace, arch: str, minutes: float, data: str, out: Path, steps: int = 0) -> Path:
    config = {
        "family": "gan",
        "arch": arch,
        "data": data,
        "out": str(out),
        "minutes": minutes if not steps else None,
        "steps": steps or None,
        "batch": args.batch,
        "g_ch": args.channels,
        "d_ch": args.channels,
        "text_encoder": args.text_encoder,
        "attn_res": args.attn_res,
        "sample_every": 0,
        "checkpoint_every": 10**9,
        "log_every": 10,
        "seed": 0,
        "device": "cpu",
        "tensorboard": False,
    }
    start = time.perf_counter()
    run = run_training(config)
    lines = (out / "metrics.jsonl").read_text().splitlines() if (out / "metrics.jsonl").exists() else []
    steps = json.loads(lines[-1]).get("step", "?") if lines else "?"
    print(
        f"  trained {arch} on {data} for {(time.perf_counter() - start) / 60:.1f} min (~{steps} steps, "
        f"batch {args.batch}, width {args.channels}, text encoder {args.text_encoder})"
    )
    return run


def colour_following(model: torch.nn.Module, samples: int) -> list[tuple]:
    rows = []
    for color in ("red", "blue"):
        prompts = prompts_for(color, samples)
        images, _, _ = genzoo.sample(model, list(range(samples)), prompt=prompts, batch_size=64)
        hues = foreground_hue(images)
        found = classify_color(images)
        match = float((found == COLOR_NAMES.index(color)).float().mean())
        mean = circular_mean(hues)
        rows.append(
            (
                color,
                mean,
                hue_distance(mean, TARGET_HUES["red"]),
                hue_distance(mean, TARGET_HUES["blue"]),
                match,
                float(np.isnan(hues).mean()),
            )
        )
    return rows


def colour_report(G: torch.nn.Module, samples: int) -> None:
    """Print hue and colour-rule match of samples for red and blue prompts."""
    print(f"\nColour following ({samples} samples per prompt colour, same seeds; chance match 25%)")
    print(
        f"{'prompt colour':>13} | {'mean hue':>8} | {'to red':>6} | {'to blue':>7} | {'match':>6} | no colour"
    )
    rows = colour_following(G, samples)
    for color, mean, d_red, d_blue, match, none in rows:
        print(f"{color:>13} | {mean:8.1f} | {d_red:6.1f} | {d_blue:7.1f} | {match:6.1%} | {none:.1%}")
    (_, _, red_to_red, red_to_blue, _, _), (_, _, blue_to_red, blue_to_blue, _, _) = rows
    right = red_to_red < blue_to_red and blue_to_blue < red_to_blue
    print(
        f"direction: {'right' if right else 'WRONG'} (red prompts' hue nearer red than blue prompts' is, and "
        f"vice versa)"
    )


def upsampler_quality(args: argparse.Namespace, root: Path) -> torch.nn.Module:
    """Train the x4 upsampler and print its PSNR on held-out shapes against bilinear upsampling."""
    up_res = args.upsampler_resolution
    up_run = train(args, "gigagan-upsampler", args.upsampler_minutes, f"shapes:{up_res}", root / "upsampler")
    U = genzoo.load(up_run)
    held = load_dataset(f"shapes:{up_res}?seed=7&count=64")
    hr = torch.stack([held[i][0] for i in range(64)]).float() / 127.5 - 1
    low = F.adaptive_avg_pool2d(hr, up_res // U.scale)
    with torch.no_grad():
        sr = U(low).clamp(-1, 1)
    bilinear = F.interpolate(low, scale_factor=U.scale, mode="bilinear", align_corners=False).clamp(-1, 1)

    def psnr(x: torch.Tensor) -> float:
        return float(10 * torch.log10(4 / (x - hr).pow(2).mean()))

    print(
        f"\nUpsampler x{U.scale} ({up_res // U.scale} -> {up_res} px, 64 held-out shapes): "
        f"PSNR {psnr(sr):.2f} dB vs bilinear {psnr(bilinear):.2f} dB"
    )
    return U


def images_per_second(fn, batch: int, repeats: int = 3) -> float:
    with torch.no_grad():
        fn()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
    return batch * repeats / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--steps", type=int, default=320, help="generator training steps (default 320; 0: --minutes)"
    )
    parser.add_argument(
        "--minutes",
        type=float,
        default=5.0,
        help="with --steps 0: generator training minutes (default 5); both 0: untrained G, throughput only",
    )
    parser.add_argument(
        "--upsampler-minutes",
        type=float,
        default=2.0,
        help="upsampler training (default 2; 0: throughput of an untrained one only)",
    )
    parser.add_argument("--resolution", type=int, default=16, help="shapes resolution for G (default 16)")
    parser.add_argument(
        "--upsampler-resolution",
        type=int,
        default=32,
        help="high-res side of the upsampler's x4 training pairs (default 32: 8 -> 32 px)",
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--channels", type=int, default=32, help="--g-ch/--d-ch (default 32)")
    parser.add_argument("--text-encoder", default="learned", choices=("learned", "minilm"))
    parser.add_argument("--attn-res", default="8", help="attention resolutions in G and D (default 8)")
    parser.add_argument("--samples", type=int, default=64, help="samples per colour (default 64)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--out", help="keep the runs here (default: a temporary directory)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory() if not args.out else None
    root = Path(args.out or tmp.name)
    print(f"GigaGAN benchmark (torch {torch.__version__}, {torch.get_num_threads()} threads)")

    if args.steps > 0 or args.minutes > 0:
        run = train(args, "gigagan", args.minutes, f"shapes:{args.resolution}", root / "gigagan", args.steps)
        G = genzoo.load(run)
        colour_report(G, args.samples)
    else:  # throughput only: an untrained generator of the benchmark's size
        width = args.channels
        G = nets.build(
            "gigagan-generator",
            resolution=args.resolution,
            channel_base=32 * width,
            channel_max=width,
            attn_res=[int(r) for r in args.attn_res.split(",")],
            text={"kind": "learned"},
        ).eval()

    if args.upsampler_minutes > 0:
        U = upsampler_quality(args, root)
    else:  # throughput only: an untrained upsampler of the default size
        U = nets.build("gigagan-upsampler", scale=4, channels=args.channels, in_resolution=16).eval()

    print("\nThroughput (batch 64, fp32, no grad)")
    z = torch.randn(64, G.z_dim)
    prompts = prompts_for("red", 64)
    g_ips = images_per_second(lambda: G(z, prompts=prompts), 64)
    lr16 = torch.rand(64, 3, 16, 16) * 2 - 1
    u_ips = images_per_second(lambda: U(lr16), 64)
    n_g = sum(p.numel() for p in G.parameters()) / 1e6
    n_u = sum(p.numel() for p in U.parameters()) / 1e6
    print(f"{'network':>28} | {'params':>7} | images/s")
    print(f"{f'generator {G.resolution}px':>28} | {n_g:6.2f}M | {g_ips:.1f}")
    print(f"{f'upsampler 16->{16 * U.scale}px':>28} | {n_u:6.2f}M | {u_ips:.1f}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
