"""Training and zero-shot evaluation of genzoo's small CLIP (:mod:`genzoo.nets.clip`).

:func:`pretrain_clip` trains it on a captioned dataset's (image, caption) pairs only -- no class labels,
no other network -- with CLIP's symmetric InfoNCE and a learned temperature. GigaGAN calls it at the
start of a run (``--clip-pretrain-images N``); the benchmark calls it alone to print the zero-shot
accuracy of the image tower (:func:`zero_shot_accuracy`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from genzoo.errors import UserError
from genzoo.nets.clip import (
    ContrastiveImageText,
    caption_targets,
    contrastive_logits,
    symmetric_info_nce,
)
from genzoo.nets.text import build_vocabulary, phrase_pattern

#: pretraining settings (batch, Adam lr and betas): measured in docs/gigagan.md ("CLIP")
CLIP_BATCH = 64
CLIP_LR = 2e-3
CLIP_BETAS = (0.0, 0.99)


def cpu_seconds() -> float:
    """User + system CPU time of this process (what the benchmarks budget)."""
    t = os.times()
    return t.user + t.system


def dataset_images(dataset: Any, indices: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
    """Items ``indices`` of a dataset of (uint8 [C, H, W], label) as float images in [-1, 1]."""
    x = torch.stack([torch.as_tensor(dataset[int(i)][0]) for i in indices])
    return x.to(device).float() / 127.5 - 1


def pretrain_clip(
    dataset: Any,
    images: int,
    seed: int = 0,
    batch: int = CLIP_BATCH,
    lr: float = CLIP_LR,
    width: int = 32,
    embed_dim: int = 64,
    text_dim: int = 64,
    text_tower: str = "bag",
    device: torch.device | str = "cpu",
    hard_negatives: bool = False,
    callback: Callable[[ContrastiveImageText, int], None] | None = None,
    callback_every: int = 0,
) -> tuple[ContrastiveImageText, dict[str, Any]]:
    """Train a CLIP on ``images`` random (image, caption) pairs of ``dataset`` (batches of ``batch``,
    Adam); returns the model (eval mode, frozen) and a report (images, steps, final loss, CPU and wall
    seconds).

    ``hard_negatives`` (with the dataset's ``attribute_words``): plus, per image and attribute, the
    cross-entropy of its caption against the captions that differ only in that attribute
    (:func:`attribute_contrastive_loss`): the batch's other captions nearly always differ in several
    attributes, so without it the towers can match pairs without reading the shape word.

    Deterministic for a seed: the init and the item order come from ``seed`` alone. ``callback(model,
    images_seen)`` runs every ``callback_every`` images (the benchmark's learning curve).
    """
    captions = getattr(dataset, "captions", None)
    if not captions:
        raise UserError("--clip-pretrain-images: the dataset has no captions to train a CLIP on")
    if images < batch:
        raise UserError(f"--clip-pretrain-images: expected at least one batch ({batch}), got {images}")
    start, wall_start = cpu_seconds(), time.monotonic()
    fork = torch.random.fork_rng(devices=[])
    with fork:
        torch.manual_seed(seed)
        model = ContrastiveImageText(
            build_vocabulary(captions), resolution=int(dataset.resolution),
            channels=int(getattr(dataset, "num_channels", 3)), width=width, text_dim=text_dim,
            embed_dim=embed_dim, text_tower=text_tower,
        ).to(device)
    generator = torch.Generator().manual_seed(seed)
    attributes = dict(getattr(dataset, "attribute_words", None) or {}) if hard_negatives else {}
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=CLIP_BETAS)
    model.train()
    seen, steps, loss = 0, 0, torch.zeros(())
    next_callback = callback_every if callback and callback_every else None
    while seen < images:
        rows = torch.randint(len(dataset), (batch,), generator=generator).tolist()
        texts = [str(captions[i]) for i in rows]
        image_emb = model.encode_image(dataset_images(dataset, rows, device))
        text_emb = model.encode_text(texts)
        loss = symmetric_info_nce(contrastive_logits(image_emb, text_emb, model.logit_scale()),
                                  caption_targets(texts, image_emb.device))
        if attributes:
            loss = loss + attribute_contrastive_loss(model, image_emb, text_emb, texts, attributes)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen, steps = seen + batch, steps + 1
        if next_callback is not None and seen >= next_callback:
            model.eval()
            callback(model, seen)
            model.train()
            next_callback += callback_every
    model.eval().requires_grad_(False)
    report = {"images": seen, "text_tower": text_tower, "steps": steps, "batch": batch, "lr": lr,
              "seed": seed, "hard_negatives": sorted(attributes),
              "final_loss": round(float(loss.detach()), 4), "cpu_seconds": round(cpu_seconds() - start, 1),
              "wall_seconds": round(time.monotonic() - wall_start, 1)}
    return model, report


def attribute_alternatives(caption: str, attribute_words: Mapping[str, Sequence[str]]
                           ) -> dict[str, list[str]]:
    """Per attribute the caption has a phrase of: the captions with that phrase changed to each of the
    other values (the wrong captions that differ from ``caption`` in exactly that attribute)."""
    out = {}
    for attribute, values in attribute_words.items():
        swapped = [swap_phrase(str(caption), values, v) for v in values]
        if all(c is not None for c in swapped):
            others = [c for c in swapped if c != caption]
            if others:
                out[attribute] = others
    return out


def attribute_contrastive_loss(model: ContrastiveImageText, image_emb: torch.Tensor, text_emb: torch.Tensor,
                               captions: Sequence[str], attribute_words: Mapping[str, Sequence[str]]
                               ) -> torch.Tensor:
    """Mean over the images and attributes of the cross-entropy of picking the own caption among it and
    its alternatives in that attribute (:func:`attribute_alternatives`): the towers must read every word.
    ``text_emb`` holds the unit-norm embeddings of ``captions``."""
    groups = [attribute_alternatives(c, attribute_words) for c in captions]
    flat = [c for g in groups for alternatives in g.values() for c in alternatives]
    if not flat:
        return image_emb.new_zeros(())
    alt_emb = model.encode_text(flat)
    scale, losses, k = model.logit_scale(), [], 0
    for i, g in enumerate(groups):
        for alternatives in g.values():
            candidates = torch.cat([text_emb[i : i + 1], alt_emb[k : k + len(alternatives)]])
            logits = scale * candidates @ image_emb[i]
            losses.append(torch.logsumexp(logits.float(), 0) - logits[0].float())
            k += len(alternatives)
    return torch.stack(losses).mean()


def swap_phrase(caption: str, phrases: Sequence[str], new: str) -> str | None:
    """``caption`` with its phrase from ``phrases`` (the longest found, as whole words) replaced by ``new``;
    None when it has none of them."""
    for phrase in sorted(phrases, key=len, reverse=True):
        pattern = phrase_pattern(phrase)
        if pattern.search(caption):
            return pattern.sub(new, caption, count=1)
    return None


@torch.no_grad()
def zero_shot_accuracy(
    model: ContrastiveImageText,
    images: torch.Tensor,
    captions: Sequence[str],
    attribute_words: Mapping[str, Sequence[str]],
) -> dict[str, float]:
    """Per attribute, how often the image embedding is closest to its own caption among the captions that
    differ from it only in that attribute (each of its values in turn; chance 1/len(values)). Images whose
    caption has no phrase of an attribute are skipped for it."""
    model.eval()
    device = next(model.parameters()).device
    image_emb = model.encode_image(images.to(device))
    out = {}
    for attribute, values in attribute_words.items():
        rows, candidates, truth = [], [], []
        for i, caption in enumerate(captions):
            options = [swap_phrase(str(caption), values, v) for v in values]
            own = [k for k, c in enumerate(options) if c == caption]
            if any(c is None for c in options) or len(own) != 1:
                continue
            rows.append(i)
            candidates += options
            truth.append(own[0])
        if not rows:
            out[attribute] = float("nan")
            continue
        text_emb = model.encode_text(candidates).view(len(rows), len(values), -1)
        scores = (text_emb * image_emb[rows][:, None]).sum(-1)
        out[attribute] = float((scores.argmax(1).cpu() == torch.tensor(truth)).float().mean())
    return out
