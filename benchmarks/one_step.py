"""One- and two-step generators on shapes:16 at an equal training budget: ECT, sCM and CD from one EDM
teacher, beside the teacher's guided Heun-12 (the demo's protocol: 512 seeds, shapes features, FD and
conditional accuracy against 2000 reference images).

    python benchmarks/one_step.py --teacher RUN [--minutes 2.55] [--out /tmp/one_step]

Runs one training job at a time (1 thread each) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

COMMON = ["--data", "shapes:16", "--precision", "bf16", "--batch", "32", "--checkpoint-every", "50",
          "--keep-last", "2", "--sample-every", "0", "--log-every", "10", "--no-tensorboard", "--seed", "0"]


def genzoo(*args: str) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    subprocess.run([sys.executable, "-m", "genzoo", *args], check=True, env=env)


def evaluate(out: Path, name: str, ckpt: Path, *flags: str) -> dict:
    samples = out / f"{name}.npz"
    genzoo("sample", "--ckpt", str(ckpt), "--seeds", "0-511", "--batch", "128", "--out", str(samples), *flags)
    genzoo("eval", "--samples", str(samples), "--ref", "shapes:16", "--features", "shapes", "--metrics",
           "fid,acc", "--ref-count", "2000", "--model", name, "--out", str(out / f"eval-{name}.json"))
    return json.loads((out / f"eval-{name}.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True,
                        help="an EDM diffusion run on shapes:16 (class-conditional)")
    parser.add_argument("--minutes", default="2.55", help="training minutes per student (demo: 2.55)")
    parser.add_argument("--steps", default="800",
                        help="planned steps (ECT's stages, sCM's warm-up follow it)")
    parser.add_argument("--out", default="/tmp/genzoo-one-step")
    args = parser.parse_args()
    out = Path(args.out)
    budget = ["--minutes", args.minutes, "--steps", args.steps]
    runs = {
        "ect": ["--mode", "ect", "--init", args.teacher, "--lr", "1e-3", "--ect-stages", "5"],
        "scm": ["--mode", "scm", "--teacher", args.teacher, "--teacher-guidance", "3", "--lr", "1e-4"],
        "cd": ["--mode", "cd", "--teacher", args.teacher, "--teacher-guidance", "3", "--num-scales", "10",
               "--cd-targets", "trajectory", "--trajectory-pool", "512", "--lr", "1e-3"],
    }
    rows = []
    for name, flags in runs.items():
        genzoo("train", "--family", "consistency", "--out", str(out / name), *flags, *budget, *COMMON)
        for steps in (1, 2):
            rows.append((f"{name}-{steps}step", evaluate(out, f"{name}-{steps}step", out / name, "--steps",
                                                         str(steps))))
    rows.append(("teacher-heun12-cfg3", evaluate(out, "teacher", Path(args.teacher), "--sampler", "heun",
                                                 "--steps", "12", "--guidance", "3")))
    print("| model | FD (shapes) | cond. accuracy |\n|---|---|---|")
    for name, metrics in rows:
        fd, acc = metrics.get("fd", float("nan")), metrics.get("accuracy", float("nan"))
        print(f"| {name} | {fd:.4g} | {acc:.3f} |")


if __name__ == "__main__":
    main()
