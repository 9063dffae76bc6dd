"""Sampling speed of a consistency model next to its teacher's sampler, on the same network.

    python benchmarks/consistency.py [--resolution 32] [--batch 16] [--repeats 3] [--heun-steps 18]
                                     [--ckpt RUN] [--threads N]

One network (a random-weight DDPM++ UNet, or the network of ``--ckpt``, a consistency run or converted
model) is timed, no grad, fp32, as
- a consistency model, one step: f(σ_max·z, σ_max), 1 NFE;
- a consistency model, two steps (ts = 0, 22, 39 on the 40-point grid), 2 NFE;
- the teacher's sampler: EDM's deterministic Heun (``edm_sampler``, 18 steps = 35 NFE) over the same
  network in the EDM preconditioning.
Prints images/s (best of ``--repeats``), NFE, ms per network evaluation and the speed-up over Heun.
"""

from __future__ import annotations

import argparse
import time

import torch

from genzoo import nets
from genzoo.consistency import ConsistencyModel, sample
from genzoo.diffusion.precond import EDMDenoiser
from genzoo.diffusion.samplers import edm_sampler


def best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--heun-steps", type=int, default=18)
    parser.add_argument("--ckpt", help="time this consistency run or converted model's network instead")
    parser.add_argument("--threads", type=int, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    if args.ckpt:
        from genzoo.api import load

        cm = load(args.ckpt)
        net = cm.model
    else:
        net = nets.build("ddpmpp", resolution=args.resolution, in_channels=3, model_channels=64,
                         channel_mult=[1, 2, 2], num_blocks=2, attn_resolutions=[args.resolution // 2])
        cm = ConsistencyModel(net)
    cm.eval()
    teacher = EDMDenoiser(net).eval()
    res, channels = int(net.resolution), int(net.in_channels)
    labels = torch.zeros(args.batch, dtype=torch.long) if int(getattr(net, "label_dim", 0) or 0) else None
    z = torch.randn(args.batch, channels, res, res)
    gen = torch.Generator().manual_seed(1)

    def noise(like: torch.Tensor) -> torch.Tensor:
        return torch.randn(like.shape, generator=gen)

    rows = []
    with torch.no_grad():
        for name, nfe, fn in (
            ("consistency 1-step", 1, lambda: sample(cm, noise, z.shape, labels, steps=1)),
            ("consistency 2-step (0,22,39)", 2,
             lambda: sample(cm, noise, z.shape, labels, steps=40, ts=[0, 22, 39])),
            (f"EDM Heun {args.heun_steps} steps", 2 * args.heun_steps - 1,
             lambda: edm_sampler(teacher, z, labels, num_steps=args.heun_steps)),
        ):
            seconds = best_seconds(fn, args.repeats)
            rows.append((name, nfe, args.batch / seconds, seconds * 1000 / nfe))
    params = sum(p.numel() for p in net.parameters()) / 1e6
    print(f"network: {type(net).__name__} {params:.2f}M params, {res}x{res}, batch {args.batch}, "
          f"{torch.get_num_threads()} threads, fp32")
    print(f"{'sampler':32s} {'NFE':>4s} {'images/s':>10s} {'ms/NFE':>8s} {'vs Heun':>8s}")
    heun_rate = rows[-1][2]
    for name, nfe, rate, ms in rows:
        print(f"{name:32s} {nfe:4d} {rate:10.2f} {ms:8.1f} {rate / heun_rate:7.1f}x")


if __name__ == "__main__":
    main()
