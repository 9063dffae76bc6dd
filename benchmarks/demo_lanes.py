"""The demo's training lanes before and after a change: images per CPU-second of each recipe; or one
lane trained and evaluated as the demo does.

    python benchmarks/demo_lanes.py --before REV [--stages edm,biggan] [--steps 30] [--rounds 2]
    python benchmarks/demo_lanes.py --lane 2 --out DIR [--minutes 15]

Each stage is the demo's own recipe (``genzoo.demo.plan_demo``: network, batch, precision, channels_last)
trained by the engine with one torch thread, once with the package as at git revision REV (extracted to a
temporary folder) and once with the working tree, in turns (before, after, before, after, ...), each in its
own process. A run trains 3 steps, then resumes and trains ``--steps`` more; the CPU seconds of that second
part (process CPU time, which barely moves with other processes' load at a fixed thread count) give the
images per CPU-second. The ratio of the medians is the factor on the images a lane sees in its minutes.

``--lane N`` trains lane N's runs of ``plan_demo(DIR, minutes)`` one after the other on one thread with
their wall-time shares, as the demo's lane worker does (:func:`genzoo.demo.train_stage`), then samples and
evaluates that lane's configurations as the demo does (:func:`genzoo.demo.eval_stage`: the demo's seeds,
reference and metrics; grids in DIR/evals/<config>/grid.png), and prints images seen, minutes, FD and
conditional accuracy: a lane measured without running the whole demo. On a machine with another 1-thread
job on the other core this is close to the demo's own conditions.
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


def train_lane(lane: int, out: str, minutes: float) -> None:
    """Train and evaluate lane ``lane`` (1-based) of the demo in ``out`` (see the module docstring)."""
    import torch

    from genzoo.demo import LANES, eval_stage, plan_demo, reference_stage, train_stage
    from genzoo.metrics import get_extractor

    torch.set_num_threads(1)
    root = Path(out).resolve()
    plan = plan_demo(root, minutes)
    names = LANES[lane - 1]
    summaries = {}
    for stage in (s for s in plan.train if s.name in names):
        summaries[stage.name] = train_stage(stage, root)
    extractor = get_extractor("shapes")
    reference = reference_stage(root, 16, plan.ref_count, extractor)
    print(f"# demo lane {lane} ({', '.join(names)}), {minutes:g}-minute demo, 1 thread; "
          f"load average {os.getloadavg()[0]:.1f}")
    for name, s in summaries.items():
        extra = f" (CLIP pretraining {s['clip_minutes']:.2f})" if s.get("clip_minutes") else ""
        print(f"{name:10s} {s['images_seen']:7d} images in {s['train_minutes']:.2f} min{extra}")
    print(f"{'config':18s} {'FD':>8s} {'precision':>9s} {'recall':>7s} {'accuracy':>8s}")
    for stage in (e for e in plan.evals if e.run in names):
        record = json.loads(eval_stage(stage, plan, root, out, extractor, reference,
                                       summaries[stage.run]).read_text())
        print(f"{stage.name:18s} {record['fd']:8.2f} {record['precision']:9.3f} {record['recall']:7.3f} "
              f"{record['accuracy']:8.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", metavar="REV", help="git revision of the 'before' package")
    parser.add_argument("--stages", default="edm,biggan")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--lane", type=int, choices=(1, 2),
                        help="train and evaluate this lane as the demo does")
    parser.add_argument("--minutes", type=float, default=15.0,
                        help="the demo's budget for --lane (default 15)")
    parser.add_argument("--child", metavar="STAGE", help=argparse.SUPPRESS)
    parser.add_argument("--out", help="--lane: the output folder (a demo output folder holding that lane)")
    args = parser.parse_args()
    if args.child:
        child(args.out, args.child, args.steps)
        return
    if args.lane:
        if not args.out:
            parser.error("--lane needs --out DIR (the demo's output folder for that lane)")
        train_lane(args.lane, args.out, args.minutes)
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
