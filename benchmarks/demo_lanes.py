"""The demo's training lanes before and after a change: images per CPU-second of each recipe.

    python benchmarks/demo_lanes.py --before REV [--stages edm,biggan] [--steps 30] [--rounds 2]

Each stage is the demo's own recipe (``genzoo.demo.plan_demo``: network, batch, precision, channels_last)
trained by the engine with one torch thread, once with the package as at git revision REV (extracted to a
temporary folder) and once with the working tree, in turns (before, after, before, after, ...), each in its
own process. A run trains 3 steps, then resumes and trains ``--steps`` more; the CPU seconds of that second
part (process CPU time, which barely moves with other processes' load at a fixed thread count) give the
images per CPU-second. The ratio of the medians is the factor on the images a lane sees in its minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WARM_STEPS = 3


def child(out: str, stage_name: str, steps: int) -> None:
    """Train ``stage_name``'s recipe to WARM_STEPS steps, resume to WARM_STEPS + steps, print JSON."""
    import torch

    import genzoo
    from genzoo.demo import plan_demo
    from genzoo.train.engine import train

    torch.set_num_threads(1)
    plan = plan_demo(out, train_steps=WARM_STEPS, gigagan=stage_name == "gigagan")
    stage = next(s for s in plan.train if s.name == stage_name)
    config = dict(stage.config, checkpoint_every=10**6, steps=WARM_STEPS)
    config.pop("minutes", None)
    train(dict(config))
    config["steps"] = WARM_STEPS + steps
    cpu = time.process_time()
    train(dict(config))
    cpu = time.process_time() - cpu
    print(json.dumps({"package": str(Path(genzoo.__file__).parent), "images": steps * config["batch"],
                      "cpu_s": cpu}))


def run(package_root: str, stage: str, steps: int) -> float:
    """Images per CPU-second of one child run with ``package_root`` first on the import path."""
    with tempfile.TemporaryDirectory() as out:
        env = dict(os.environ, PYTHONPATH=package_root)
        argv = [sys.executable, __file__, "--child", stage, "--out", out, "--steps", str(steps)]
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=out)
    if proc.returncode:
        raise SystemExit(f"{stage} ({package_root}) failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if not result["package"].startswith(package_root):
        raise SystemExit(f"imported {result['package']}, expected a package under {package_root}")
    return result["images"] / result["cpu_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", metavar="REV", help="git revision of the 'before' package")
    parser.add_argument("--stages", default="edm,biggan")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", metavar="STAGE", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.out, args.child, args.steps)
        return
    if not args.before:
        parser.error("--before REV is required")
    with tempfile.TemporaryDirectory() as before_root:
        archive = subprocess.run(["git", "archive", args.before, "genzoo"], cwd=ROOT, capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", before_root], input=archive, check=True)
        print(f"# demo lanes, before = {args.before}, after = working tree; 1 thread, {args.steps} steps "
              f"after {WARM_STEPS}, {args.rounds} rounds; load average {os.getloadavg()[0]:.1f}")
        print(f"{'stage':10s} {'before img/cpu-s':>18s} {'after img/cpu-s':>17s} {'after/before':>13s}")
        for stage in args.stages.split(","):
            runs: dict[str, list[float]] = {"before": [], "after": []}
            for _ in range(args.rounds):
                runs["before"].append(run(before_root, stage, args.steps))
                runs["after"].append(run(str(ROOT), stage, args.steps))
            b, a = statistics.median(runs["before"]), statistics.median(runs["after"])
            spread = "  ".join(f"{x:.0f}/{y:.0f}" for x, y in zip(runs["before"], runs["after"]))
            print(f"{stage:10s} {b:18.1f} {a:17.1f} {a / b:12.2f}x   (rounds: {spread})", flush=True)


if __name__ == "__main__":
    main()
