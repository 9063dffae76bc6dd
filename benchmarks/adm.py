"""Throughput of the ADM UNet on CPU: forward and forward+backward in fp32, bf16 autocast and channels_last.

    python benchmarks/adm.py [--resolution 32] [--batch 16] [--channels 64] [--repeats 3] [--threads N]

A CPU-sized ADM configuration (the released ImageNet-64 model's structure scaled down: 3 levels, 2
res blocks, attention at res/2 and res/4, 32 channels per head, scale-shift norm, resblock up/down,
new attention order, learned sigmas, class-conditional) with random weights. Each row runs in its own
process, so its peak memory is its own: images/s (best of ``--repeats``) and the process's peak
resident memory (CPU) or peak allocated memory (CUDA), in MiB.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

import torch

SETTINGS = {
    "fp32": (None, torch.contiguous_format),
    "bf16": (torch.bfloat16, torch.contiguous_format),
    "fp32-channels_last": (None, torch.channels_last),
    "bf16-channels_last": (torch.bfloat16, torch.channels_last),
}
PASSES = ("forward", "forward+backward")


def build(args: argparse.Namespace) -> torch.nn.Module:
    from genzoo.nets.adm import ADMUNet

    res = args.resolution
    return ADMUNet(
        image_size=res,
        num_channels=args.channels,
        num_res_blocks=2,
        channel_mult="1,2,2",
        attention_resolutions=f"{res // 2},{res // 4}",
        num_head_channels=32,
        learn_sigma=True,
        class_cond=True,
        num_classes=10,
        resblock_updown=True,
        use_new_attention_order=True,
        use_scale_shift_norm=True,
        dropout=0.1,
    )


def run_row(args: argparse.Namespace) -> None:
    """One (setting, pass): prints 'images/s peak_MiB'."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    dtype, memory_format = SETTINGS[args.setting]
    net = build(args).to(device).to(memory_format=memory_format)
    x = torch.randn(args.batch, 3, args.resolution, args.resolution, device=device).to(
        memory_format=memory_format
    )
    t = torch.randint(0, 1000, (args.batch,), device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            if args.pass_ == "forward":
                with torch.no_grad():
                    net(x, t, y)
            else:
                net.zero_grad(set_to_none=True)
                net(x, t, y).float().square().mean().backward()

    step()  # warm-up
    best = float("inf")
    for _ in range(args.repeats):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    print(f"{args.batch / best:.2f} {peak:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--setting", choices=list(SETTINGS), help=argparse.SUPPRESS)
    parser.add_argument("--pass", dest="pass_", choices=PASSES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.setting:
        run_row(args)
        return
    params = sum(p.numel() for p in build(args).parameters()) / 1e6
    print(
        f"ADM UNet {args.resolution}x{args.resolution}, {args.channels} channels, {params:.2f}M parameters, "
        f"batch {args.batch}, {args.threads or torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print(f"{'setting':<22}{'pass':<18}{'images/s':>10}{'peak MiB':>10}")
    common = [
        f"--{k}={v}"
        for k, v in (
            ("resolution", args.resolution),
            ("batch", args.batch),
            ("channels", args.channels),
            ("repeats", args.repeats),
            ("device", args.device),
        )
        if v is not None
    ]
    if args.threads:
        common.append(f"--threads={args.threads}")
    for setting in SETTINGS:
        for kind in PASSES:
            out = subprocess.run(
                [sys.executable, __file__, *common, f"--setting={setting}", f"--pass={kind}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            print(f"{setting:<22}{kind:<18}{float(out[0]):>10.1f}{float(out[1]):>10.0f}")


if __name__ == "__main__":
    main()
