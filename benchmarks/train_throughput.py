"""Training throughput of the shared engine: images/s and peak memory for fp32, bf16 and channels_last,
for a diffusion UNet (EDM's DDPM++, "ddpmpp") and a GAN (BigGAN), on the built-in shapes data.

    python benchmarks/train_throughput.py [--steps 6] [--batch 32] [--resolution 32] [--device auto]

Each configuration runs `genzoo train` in its own process (so its peak memory is its own: CUDA
max_memory_allocated, else the process's peak RSS). images/s is the median over the steps after the
first two (warm-up), as logged in metrics.jsonl; it includes data loading and the engine's own work.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

MODELS = {
    "diffusion ddpmpp": ["--family", "diffusion", "--arch", "ddpmpp", "--model-channels", "32",
                         "--channel-mult", "1,2,2", "--num-blocks", "2", "--lr-warmup-kimg", "0"],
    "gan biggan": ["--family", "gan", "--arch", "biggan", "--g-ch", "32", "--d-ch", "32"],
}
VARIANTS = {
    "fp32": ["--precision", "fp32"],
    "bf16": ["--precision", "bf16"],
    "fp32 channels_last": ["--precision", "fp32", "--channels-last"],
    "bf16 channels_last": ["--precision", "bf16", "--channels-last"],
}


def child(argv: list[str]) -> None:
    """Train once and print {"img_per_s", "peak_mib", "params"} as JSON."""
    import resource

    import torch
    from safetensors.torch import load_file

    from genzoo.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        code = main(["train", *argv, "--out", str(out), "--log-every", "1", "--sample-every", "0",
                     "--no-tensorboard", "--checkpoint-every", "100000"])
        if code:
            raise SystemExit(code)
        lines = (out / "metrics.jsonl").read_text().splitlines()
        rates = [json.loads(line)["img_per_s"] for line in lines][2:]
        config = json.loads((out / "config.json").read_text())
        weights = load_file(str(next(out.glob("checkpoint-*")) / "model.safetensors"))
        params = sum(v.numel() for k, v in weights.items() if k.startswith(config["sampled_player"] + "."))
    if torch.cuda.is_available() and config.get("device") != "cpu":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"img_per_s": statistics.median(rates), "peak_mib": peak, "params": params}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="steps per configuration (first 2 are warm-up)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, help="torch CPU threads per run (default: torch's)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    if args.steps < 3:
        parser.error("--steps: at least 3 (2 warm-up steps are not counted)")
    common = ["--data", f"shapes:{args.resolution}?count=512", "--steps", str(args.steps), "--batch",
              str(args.batch), "--device", args.device]
    print(f"genzoo training throughput: shapes {args.resolution} px, batch {args.batch}, {args.steps} steps "
          f"(median of the last {args.steps - 2}), device {args.device}, {os.cpu_count()} CPUs, "
          f"threads {args.threads or 'default'}", flush=True)
    print(f"{'model':<18} {'params':>8} {'variant':<20} {'images/s':>9} {'vs fp32':>8} {'peak MiB':>9}")
    for model, model_args in MODELS.items():
        base = None
        for variant, variant_args in VARIANTS.items():
            argv = [*model_args, *variant_args, *common]
            env = dict(os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}))
            result = subprocess.run([sys.executable, __file__, "--child", json.dumps(argv)],
                                    capture_output=True, text=True, env=env)
            if result.returncode:
                tail = (result.stderr.strip().splitlines() or ["?"])[-1]
                print(f"{model:<18} {'':>8} {variant:<20} failed: {tail}")
                continue
            row = json.loads(result.stdout.strip().splitlines()[-1])
            base = base or row["img_per_s"]
            print(f"{model:<18} {row['params'] / 1e6:>7.2f}M {variant:<20} {row['img_per_s']:>9.1f} "
                  f"{row['img_per_s'] / base:>7.2f}x {row['peak_mib']:>9.0f}", flush=True)


if __name__ == "__main__":
    main()
