"""``metrics.json``: one model configuration's quality and cost, written by ``genzoo eval`` and the demo,
read by ``genzoo compare``. The schema is documented in docs/metrics.md.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from genzoo.errors import UserError

SCHEMA = "genzoo-metrics/1"
#: Identity and settings (strings / a dict).
TEXT_FIELDS = ("model", "family", "features", "ref", "samples", "grid", "cost", "device")
#: Numbers (null when not measured). ``fd`` is FID when ``features`` is "inception".
NUMBER_FIELDS = ("nfe", "images_per_s", "latency_s", "peak_memory_mb", "flops_per_image", "params_x_nfe",
                 "fd", "fd_dinov2", "sfid", "is", "is_std", "precision", "recall", "kid", "kid_std",
                 "accuracy", "num_samples", "num_ref")
#: Column titles used by tables and plots.
LABELS = {"nfe": "NFE", "images_per_s": "images/s", "latency_s": "latency/batch (s)",
          "peak_memory_mb": "peak MB", "flops_per_image": "FLOPs/image",
          "params_x_nfe": "params × NFE", "fd": "FD", "fd_dinov2": "FD_DINOv2", "sfid": "sFID", "is": "IS",
          "precision": "precision", "recall": "recall", "kid": "KID", "accuracy": "cond. accuracy",
          "num_samples": "samples"}
#: Lower is better for these; higher for the rest of the quality numbers.
LOWER_IS_BETTER = {"fd", "fd_dinov2", "sfid", "kid", "latency_s", "peak_memory_mb", "nfe", "flops_per_image",
                   "params_x_nfe"}


def metric_label(key: str, features: str | None = None) -> str:
    if key == "fd":
        return ("FID" if features == "inception" else "FD_DINOv2" if features == "dinov2"
                else f"FD ({features})" if features else "FD")
    return LABELS.get(key, key)


def validate_record(record: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Check types; returns a plain dict. Unknown keys are kept (forward compatible)."""
    if not isinstance(record, Mapping):
        raise UserError(f"{source}: expected a JSON object")
    out = dict(record)
    for key in NUMBER_FIELDS:
        value = out.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise UserError(f"{source}: '{key}' must be a number or null, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            out[key] = None
    if "sampler" in out and not isinstance(out["sampler"], (Mapping, type(None))):
        raise UserError(f"{source}: 'sampler' must be an object of settings")
    for key in TEXT_FIELDS:
        if out.get(key) is not None and not isinstance(out[key], str):
            raise UserError(f"{source}: '{key}' must be a string")
    return out


def read_metrics(path: str | Path) -> dict[str, Any]:
    """Read a ``metrics.json``; ``_path`` holds where it was found (grid paths are relative to it)."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such metrics file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    record = validate_record(record, str(path))
    record.setdefault("model", path.parent.name or path.stem)
    record["_path"] = str(path)
    return record


def write_metrics(path: str | Path, record: Mapping[str, Any], merge: bool = True) -> Path:
    """Write ``record`` (merged into the existing file's fields when ``merge``), atomically."""
    path = Path(path)
    data: dict[str, Any] = {}
    if merge and path.is_file():
        data = {k: v for k, v in read_metrics(path).items() if not k.startswith("_")}
    data.update({k: v for k, v in record.items() if not k.startswith("_")})
    data["schema"] = SCHEMA
    data = validate_record(data, str(path))
    from genzoo.io.atomic import atomic_output

    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def find_metrics(target: str | Path) -> list[Path]:
    """metrics.json files named by a CLI argument: the file itself, ``DIR/metrics.json``, or every
    ``DIR/*/metrics.json`` (a demo or sweep directory)."""
    target = Path(target)
    if target.is_file():
        return [target]
    if (target / "metrics.json").is_file():
        return [target / "metrics.json"]
    if target.is_dir():
        found = sorted(target.glob("*/metrics.json"))
        if found:
            return found
    raise UserError(f"{target}: expected a metrics.json file, or a run directory holding metrics.json "
                    "(or subdirectories that do)")


#: What ``eval`` copies from the cost ``sample`` wrote beside the samples.
COST_FIELDS = ("nfe", "images_per_s", "latency_s", "peak_memory_mb", "flops_per_image", "params_x_nfe",
               "batch_size", "device", "processes", "sampler", "family")


def attach_sample_cost(result: dict[str, Any], samples: str | Path,
                       metrics_path: str | Path) -> dict[str, Any]:
    """Add the sampling cost recorded beside ``samples`` (fields already in ``result`` win) and store
    ``samples`` relative to the metrics file, so a run directory can be moved or shared."""
    from genzoo.metrics.cost import read_sample_cost, sample_cost_path

    cost = read_sample_cost(samples)
    if cost is not None:
        for key in COST_FIELDS:
            if result.get(key) is None and cost.get(key) is not None:
                result[key] = cost[key]
    base = Path(metrics_path).resolve().parent
    if cost is not None:
        result["cost"] = os.path.relpath(sample_cost_path(samples).resolve(), base)
    result["samples"] = os.path.relpath(Path(samples).resolve(), base)
    return result
