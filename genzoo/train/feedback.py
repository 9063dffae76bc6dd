"""What a training run tells its user: a progress bar, ``metrics.jsonl`` and TensorBoard events."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from genzoo.progress import progress


def _tensorboard_writer(log_dir: Path) -> Any:
    """A ``SummaryWriter`` when tensorboard is installed, else None (it is optional)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(log_dir))


class Feedback:
    """Averages the logged numbers over ``log_every`` steps and writes them; rank 0 only."""

    def __init__(self, out: Path, config: dict[str, Any], enabled: bool = True, start_step: int = 0):
        self.out, self.enabled = out, enabled
        self.log_every = int(config["log_every"])
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.bar = None
        self.metrics = None
        self.tb = None
        if enabled:
            truncate_metrics(out / "metrics.jsonl", start_step)
            self.metrics = open(out / "metrics.jsonl", "a")
            if config.get("tensorboard"):
                self.tb = _tensorboard_writer(out / "tensorboard")

    def start(self, step: int, target: int | None, budget_seconds: float,
              started: float | None = None) -> None:
        """``started``: the engine's clock for the budget, so ``time_s`` and the stopping rule agree."""
        self.run_start = time.monotonic() if started is None else started
        self.interval_start = self.run_start
        self.interval_images = 0
        if self.enabled:
            self.bar = progress(target, "train", unit="step", initial=step, mininterval=1.0)
            self.budget = budget_seconds

    def record(self, step: int, images_seen: int, logs: dict[str, float], batch: int) -> None:
        if not self.enabled:
            return
        self.interval_images += batch
        for k, v in logs.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                self.sums[k] = self.sums.get(k, 0.0) + v
                self.counts[k] = self.counts.get(k, 0) + 1
        elapsed = time.monotonic() - self.interval_start
        rate = self.interval_images / elapsed if elapsed > 0 else 0.0
        postfix = {k.split("/", 1)[1]: f"{v:.4g}" for k, v in logs.items() if k.startswith("loss/")}
        postfix["img/s"] = f"{rate:.1f}"
        if math.isfinite(self.budget):
            postfix["left"] = f"{max(0.0, self.budget - (time.monotonic() - self.run_start)) / 60:.1f}min"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(1)
        if step % self.log_every == 0:
            line = {"step": step, "kimg": images_seen / 1000,
                    "time_s": round(time.monotonic() - self.run_start, 3), "img_per_s": round(rate, 3)}
            line.update({k: self.sums[k] / self.counts[k] for k in sorted(self.sums)})
            self.metrics.write(json.dumps(line) + "\n")
            self.metrics.flush()
            if self.tb is not None:
                for k, v in line.items():
                    if k != "step":
                        self.tb.add_scalar(k, v, step)
            self.sums, self.counts = {}, {}
            self.interval_start, self.interval_images = time.monotonic(), 0

    def note(self, message: str) -> None:
        if self.enabled and self.bar is not None:
            self.bar.write(f"genzoo train: {message}")

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        if self.metrics is not None:
            self.metrics.close()
        if self.tb is not None:
            self.tb.close()


def truncate_metrics(path: Path, step: int) -> None:
    """Keep the lines of ``metrics.jsonl`` up to ``step`` (the checkpoint a run resumes from), so a
    resumed run does not log the steps after it twice; a line cut short by a kill is dropped too."""
    if not path.is_file():
        return
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
            ok = isinstance(entry, dict) and int(entry.get("step", step + 1)) <= step
        except (ValueError, TypeError):
            ok = False
        if ok:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        from genzoo.io.atomic import atomic_output

        with atomic_output(path, "metrics.jsonl") as tmp:
            tmp.write_text("".join(f"{line}\n" for line in kept))
