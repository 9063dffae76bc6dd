"""A domain feature network for the built-in ``shapes`` data: a small CNN classifier of its 16 classes.

Its penultimate features give a Fréchet distance, precision/recall and KID that run in seconds on a
CPU (Inception at 299 px takes minutes per thousand images), and its predictions give the
**conditional accuracy**: the fraction of samples that show the class they were asked for.

A trained copy ships as ``genzoo/metrics/shapes_classifier.safetensors``, made by
``genzoo features train`` (:func:`train_shapes_classifier`). Training sees each image also
degraded to a lower resolution and back, so samples from 16 or 24 px models are judged fairly.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from genzoo.errors import UserError
from genzoo.io.images import from_uint8

BUNDLED_CLASSIFIER = Path(__file__).with_name("shapes_classifier.safetensors")
INPUT_SIZE = 32


class ShapesClassifier(nn.Module):
    """uint8 NCHW RGB (any size; resized to 32 px) -> {"pool": [N, 4·width], "logits": [N, classes]}."""

    def __init__(self, num_classes: int = 16, width: int = 32):
        super().__init__()
        w = width

        def unit(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.body = nn.Sequential(*unit(3, w), *unit(w, w), nn.MaxPool2d(2),       # 16 px
                                  *unit(w, 2 * w), nn.MaxPool2d(2),                 # 8 px
                                  *unit(2 * w, 4 * w), nn.MaxPool2d(2))             # 4 px
        self.head = nn.Linear(4 * w, num_classes)
        self.num_classes = num_classes
        self.width = width

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (or 0..255 float) NCHW -> float in [-1, 1] at 32×32 (antialiased bilinear resize)."""
        x = from_uint8(images.to(self.head.weight.device))
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True,
                              align_corners=False)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        pool = self.features(self.prepare(images))
        return {"pool": pool, "logits": self.head(pool)}


def _degrade(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The second half of the batch goes down to a random 12..31 px and back up to 32 (the look of
    samples from a low-resolution model); the first half stays sharp. Mixing both in every batch keeps
    BatchNorm's batch statistics equal to the running ones it uses at evaluation."""
    half = len(x) // 2
    size = int(torch.randint(12, INPUT_SIZE, (1,), generator=generator))
    low = F.interpolate(x[half:], size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    up = F.interpolate(low, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
    return torch.cat([x[:half], up])


def _render(dataset, indices: range) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*(dataset[i] for i in indices))
    return torch.stack(images), torch.tensor(labels)


def train_shapes_classifier(out: str | Path = BUNDLED_CLASSIFIER, count: int = 20_000, steps: int = 500,
                            batch_size: int = 128, lr: float = 3e-3, width: int = 32, seed: int = 0,
                            val_count: int = 2000, log: Callable[[str], None] = print) -> dict:
    """Train the shapes classifier on ``count`` items of ``shapes`` (seed 0) and write it to ``out``.

    Validation uses items from a different dataset seed (never seen in training), at 32 px and
    rendered at 16 px. Returns the training report, also stored in the file's metadata.
    """
    from safetensors.torch import save_file

    from genzoo.data import ShapesDataset

    torch.manual_seed(seed)
    torch.set_flush_denormal(True)  # tiny late-training gradients must not hit slow denormal arithmetic
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    train = ShapesDataset(INPUT_SIZE, count=count, seed=0)
    images, labels = _render(train, range(count))
    model = ShapesClassifier(train.num_classes, width)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    model.train()
    for step in range(steps):
        batch = torch.randint(count, (batch_size,), generator=generator)
        x = _degrade(model.prepare(images[batch]), generator)
        if torch.rand((), generator=generator) < 0.5:
            x = x.flip(-1)  # a mirrored shape keeps its class
        loss = F.cross_entropy(model.head(model.features(x)), labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == steps - 1:
            log(f"step {step:4d}/{steps}  loss {loss.item():.4f}  {time.perf_counter() - start:.0f} s")
    model.eval()
    report = {"train_count": count, "steps": steps, "batch_size": batch_size, "width": width,
              "num_classes": train.num_classes, "seconds": round(time.perf_counter() - start, 1)}
    for res in (32, 16):
        val = ShapesDataset(res, count=val_count, seed=1)
        accuracy = classifier_accuracy(model, *_render(val, range(val_count)))
        report[f"val_accuracy_{res}px"] = round(accuracy, 4)
    log("validation: " + ", ".join(f"{k} {v}" for k, v in report.items() if k.startswith("val_")))
    from genzoo.io.atomic import atomic_output

    with atomic_output(out) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp),
                  metadata={"genzoo": "shapes_classifier", "report": json.dumps(report)})
    return report


@torch.no_grad()
def classifier_accuracy(model: ShapesClassifier, images: torch.Tensor, labels: torch.Tensor,
                        batch_size: int = 500) -> float:
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = model(images[start:start + batch_size])["logits"]
        correct += int((logits.argmax(1).cpu() == labels[start:start + batch_size]).sum())
    return correct / len(images)


def load_shapes_classifier(path: str | Path | None = None,
                           device: str | torch.device = "cpu") -> ShapesClassifier:
    """The shapes classifier from ``path`` (default: the copy shipped with genzoo), in eval mode."""
    from safetensors import safe_open

    from genzoo.checkpoints import load_safetensors, load_state_into

    path = Path(path) if path else BUNDLED_CLASSIFIER
    if not path.is_file():
        raise UserError(f"{path}: no shapes classifier here; make one with "
                        f"`genzoo features train --out {path}`")
    state = load_safetensors(path)
    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("genzoo") != "shapes_classifier":
        raise UserError(f"{path}: not a genzoo shapes classifier (made by `genzoo features train`)")
    report = json.loads(metadata.get("report", "{}"))
    model = ShapesClassifier(int(report.get("num_classes", 16)), int(report.get("width", 32)))
    load_state_into(model, state, str(path))
    model.report = report
    return model.to(device).eval().requires_grad_(False)
