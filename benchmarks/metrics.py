"""Evaluation-suite benchmark: peak memory of streaming statistics over 10,000 images, feature throughput.

    python benchmarks/metrics.py [--images 10000] [--inception-images 8]

Each measurement runs in a fresh subprocess so its peak resident memory is its own. Prints a table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = r"""
import json, sys, time
import numpy as np, torch
from genzoo.metrics.cost import peak_memory, _rss_peak_kb
task, arg, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
baseline = _rss_peak_kb() / 1024
start = time.perf_counter()
with peak_memory() as mem:
    if task == "shapes_npz":  # the shapes classifier over a sample file, streamed
        from genzoo.metrics import iter_npz_images, summarize
        from genzoo.metrics.shapes_features import load_shapes_classifier
        s = summarize(load_shapes_classifier(), iter_npz_images(arg, batch_size=500), batch_size=500)
        s.pool.mean_cov()
    elif task == "stats_2048":  # Inception-sized features (2048-d), streamed in batches of 250
        from genzoo.metrics import FeatureStats
        stats, rng = FeatureStats(), np.random.default_rng(0)
        for _ in range(count // 250):
            stats.update(rng.standard_normal((250, 2048), dtype=np.float32))
        stats.mean_cov()
    elif task == "inception":  # the FID network (random weights) on CPU at 299 px
        from genzoo.metrics.inception import InceptionFID
        net = InceptionFID().eval()
        with torch.no_grad():
            net(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
            start = time.perf_counter()
            net(torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8))
seconds = time.perf_counter() - start
print(json.dumps({"baseline_mb": baseline, "peak_mb": mem["peak_memory_mb"], "seconds": seconds}))
"""


def run_child(task: str, arg: str, count: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, task, arg, str(count)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--inception-images", type=int, default=8)
    args = parser.parse_args()

    from genzoo.data import ShapesDataset
    from genzoo.io import NpzWriter

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in sorted({min(2000, args.images), args.images}):
            path = Path(tmp) / f"samples{count}.npz"
            data = ShapesDataset(32, count=count, seed=1)
            with NpzWriter(path) as writer:
                for start in range(0, count, 1000):
                    writer.write(np.stack([data.image(i) for i in range(start, min(start + 1000, count))]))
            r = run_child("shapes_npz", str(path), count)
            rows.append((f"shapes FD stats, {count} images 32px (.npz streamed)", count, r))
        for count in sorted({min(2000, args.images), args.images}):
            rows.append((f"FeatureStats 2048-d, {count} vectors", count, run_child("stats_2048", "", count)))
        if args.inception_images:
            r = run_child("inception", "", args.inception_images)
            rows.append(
                (f"Inception (random weights) batch of {args.inception_images}", args.inception_images, r)
            )
    print(f"{'measurement':<56} {'peak RSS MB':>11} {'(baseline)':>10} {'seconds':>8} {'items/s':>9}")
    for name, count, r in rows:
        print(
            f"{name:<56} {r['peak_mb']:>11.0f} {r['baseline_mb']:>10.0f} {r['seconds']:>8.2f} "
            f"{count / r['seconds']:>9.1f}"
        )


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - t0:.0f} s")
