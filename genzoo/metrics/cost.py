"""Cost of generating images: network evaluations per image (NFE), images/s, latency per batch, peak memory.

Works for any sampler or generator callable: ``measure_cost(lambda n: ..., batch_size=...)``. NFE is
taken from the callable's return value ``(images, nfe)`` when it gives one, otherwise counted by an
:class:`~genzoo.nfe.NFECounter` hooked on the network it calls (the samplers' counter).
"""

from __future__ import annotations

import contextlib
import json
import resource
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from genzoo.errors import UserError
from genzoo.nfe import NFECounter


@dataclass
class Cost:
    """Measured cost of one configuration (``asdict`` gives the metrics.json fields)."""

    nfe: float | None            # network evaluations per image
    images_per_s: float
    latency_s: float             # median wall time per batch
    latency_std_s: float
    batch_size: int
    num_images: int
    peak_memory_mb: float | None  # CUDA: peak allocated; CPU: peak resident set of the process
    device: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class CallCounter(NFECounter):
    """The :class:`~genzoo.nfe.NFECounter` hooked on ``module``'s forward calls."""

    def __init__(self, module: nn.Module):
        super().__init__(module, hook=True)


def _rss_peak_kb() -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux


def _reset_rss_peak() -> bool:
    """Reset the kernel's peak-RSS counter (Linux: write 5 to clear_refs); False if not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


@contextlib.contextmanager
def peak_memory(device: str | torch.device = "cpu") -> Iterator[dict[str, float | None]]:
    """Context manager filling ``{"peak_memory_mb": ...}`` with the peak memory inside the block.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the process's peak resident set size (reset at
    entry where the kernel allows it, else the peak since the process started).
    """
    device = torch.device(device)
    result: dict[str, float | None] = {"peak_memory_mb": None}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        _reset_rss_peak()
    try:
        yield result
    finally:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            result["peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        else:
            peak = _rss_peak_kb()
            result["peak_memory_mb"] = None if peak is None else peak / 1024


def measure_cost(generate: Callable[[int], Any], batch_size: int, batches: int = 3, warmup: int = 1,
                 nfe: float | None = None, counter: NFECounter | None = None,
                 device: str | torch.device = "cpu") -> Cost:
    """Time ``generate(batch_size)`` over ``batches`` batches after ``warmup`` untimed ones.

    ``generate`` returns images, or ``(images, nfe)``; otherwise NFE comes from ``nfe`` or from a
    hooked :class:`~genzoo.nfe.NFECounter` on the network (rows processed / images made, so a
    classifier-free-guidance pass over a doubled batch counts as two evaluations per image).
    """
    device = torch.device(device)

    def run() -> float | None:
        out = generate(batch_size)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if isinstance(out, tuple) and len(out) >= 2 and isinstance(out[1], (int, float)):
            return float(out[1])
        return None

    for _ in range(warmup):
        run()
    if counter is not None:
        counter.reset()
    times, reported = [], None
    with peak_memory(device) as memory:
        for _ in range(batches):
            start = time.perf_counter()
            reported = run()
            times.append(time.perf_counter() - start)
    if reported is not None:
        nfe = reported
    elif nfe is None and counter is not None and counter.calls:
        nfe = counter.per_image(batch_size * batches, batches)
    total = sum(times)
    return Cost(nfe=nfe, images_per_s=batch_size * batches / total, latency_s=statistics.median(times),
                latency_std_s=statistics.pstdev(times), batch_size=batch_size,
                num_images=batch_size * batches,
                peak_memory_mb=memory["peak_memory_mb"], device=str(device))


def count_flops(run: Callable[[], Any]) -> int | None:
    """Floating-point operations of ``run()`` as counted by ``torch.utils.flop_counter`` (matmuls and
    convolutions: 2 per multiply-add; elementwise work is not counted). None where the counter cannot
    follow the computation (``autograd.grad`` inside, as classifier guidance does; its module tracker's
    hooks on some networks)."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with FlopCounterMode(display=False) as counter:
            run()
    except (RuntimeError, AssertionError):  # the counter's own limits, not the sampler's: cost stays unknown
        return None
    return int(counter.get_total_flops())


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def sample_cost_path(samples: str | Path) -> Path:
    """Where ``sample`` writes its cost: ``FILE.cost.json`` beside ``FILE.npz``, ``DIR/cost.json`` in a
    PNG folder."""
    samples = Path(samples)
    if samples.suffix == ".npz":
        return samples.with_name(samples.stem + ".cost.json")
    return samples / "cost.json"


def cost_json(cost: dict[str, Any]) -> str:
    """The text of a cost file."""
    return json.dumps(cost, indent=2, sort_keys=True, default=str) + "\n"


def write_sample_cost(samples: str | Path, cost: dict[str, Any]) -> Path:
    from genzoo.io.atomic import atomic_text

    path = sample_cost_path(samples)
    with atomic_text(path) as handle:
        handle.write(cost_json(cost))
    return path


def read_sample_cost(samples: str | Path) -> dict[str, Any] | None:
    """The cost ``sample`` recorded beside ``samples``, or None when there is none."""
    path = sample_cost_path(samples)
    if not path.is_file():
        return None
    try:
        cost = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(cost, dict):
        raise UserError(f"{path}: expected a JSON object")
    return cost
