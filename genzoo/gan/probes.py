"""Probes of whether a text-to-image GAN reads every word of its prompt (GigaGAN, issue #23).

Each probe changes exactly one attribute of a caption (shape, colour, size, position: the dataset's
``attribute_words``) and measures what moves:

- :func:`tokenizer_collisions`: pairs of vocabulary words that get one token id (then no network can
  tell them apart);
- :func:`text_swap_sensitivity`: ‖t_global(c) − t_global(c')‖ / ‖t_global(c)‖ of a text encoder;
- :func:`image_swap_sensitivity`: mean |G(z, c) − G(z, c')| with z and the noise inputs fixed;
- :func:`matching_accuracy`: how often D scores a real image higher with its own caption than with the
  one-attribute-swapped caption (0.5 is chance: D ignores that attribute).

The benchmark (benchmarks/gigagan.py) prints them during training and the tests run them on tiny nets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations

import torch
import torch.nn as nn

from genzoo.gan.gigagan import swap_attribute
from genzoo.nets.gigagan import image_pyramid
from genzoo.seeds import StackedRandomGenerator


def tokenizer_collisions(tokenizer, words: Sequence[str]) -> list[tuple[str, str]]:
    """Pairs of distinct ``words`` that ``tokenizer.word_id`` maps to the same id."""
    ids = {w: tokenizer.word_id(w) for w in dict.fromkeys(words)}
    return [(a, b) for a, b in combinations(ids, 2) if ids[a] == ids[b]]


def swapped_pairs(
    captions: Sequence[str], attribute_words: Mapping[str, Sequence[str]], seed: int = 0
) -> dict[str, tuple[list[int], list[str]]]:
    """Per attribute: (rows whose caption has a phrase of it, those captions with only it swapped)."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for attribute, choices in attribute_words.items():
        rows, swapped = [], []
        for i, caption in enumerate(captions):
            other = swap_attribute(caption, choices, generator)
            if other is not None and other != caption:
                rows.append(i)
                swapped.append(other)
        out[attribute] = (rows, swapped)
    return out


@torch.no_grad()
def text_swap_sensitivity(
    encoder: nn.Module, captions: Sequence[str], attribute_words: Mapping[str, Sequence[str]], seed: int = 0
) -> dict[str, float]:
    """Per attribute: mean ‖t_global(c) − t_global(c')‖ / ‖t_global(c)‖ over the captions."""
    was_training = encoder.training
    encoder.eval()
    base = encoder(list(captions)).global_.float()
    out = {}
    for attribute, (rows, swapped) in swapped_pairs(captions, attribute_words, seed).items():
        if rows:
            other = encoder(swapped).global_.float()
            change = (other - base[rows]).norm(dim=1) / base[rows].norm(dim=1).clamp_min(1e-12)
            out[attribute] = float(change.mean())
    encoder.train(was_training)
    return out


@torch.no_grad()
def image_swap_sensitivity(
    G: nn.Module,
    captions: Sequence[str],
    attribute_words: Mapping[str, Sequence[str]],
    seeds: Sequence[int] | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Per attribute: mean |G(z, c) − G(z, c')| (images in [-1, 1]) with z and noise from the same seed."""
    was_training = G.training
    G.eval()
    seeds = list(range(len(captions))) if seeds is None else list(seeds)
    device = next(G.parameters()).device

    def render(rows: list[int], prompts: list[str]) -> torch.Tensor:
        rng = StackedRandomGenerator(device, [seeds[i] for i in rows])
        return G(rng.randn([len(rows), G.z_dim]), prompts=prompts, rng=rng).float()

    out = {}
    for attribute, (rows, swapped) in swapped_pairs(captions, attribute_words, seed).items():
        if rows:
            base = render(rows, [captions[i] for i in rows])
            out[attribute] = float((render(rows, swapped) - base).abs().mean())
    G.train(was_training)
    return out


@torch.no_grad()
def matching_accuracy(
    D: nn.Module,
    images: torch.Tensor,
    captions: Sequence[str],
    attribute_words: Mapping[str, Sequence[str]],
    seed: int = 0,
) -> dict[str, float]:
    """Per attribute: the fraction of real ``images`` (float in [-1, 1]) that D scores higher (logits
    summed over its scales) with their own caption than with the caption swapped in that attribute."""
    was_training = D.training
    D.eval()
    images = images.to(next(D.parameters()).device).float()

    def score(rows: list[int], prompts: list[str]) -> torch.Tensor:
        logits = D(image_pyramid(images[rows], D.pyramid), prompts=prompts)
        return torch.stack(list(logits.values())).sum(0).float()

    out = {}
    for attribute, (rows, swapped) in swapped_pairs(captions, attribute_words, seed).items():
        if rows:
            right = score(rows, [captions[i] for i in rows])
            out[attribute] = float((right > score(rows, swapped)).float().mean())
    D.train(was_training)
    return out
