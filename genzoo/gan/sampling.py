"""Sampling BigGAN-style generators: truncation, eval-mode batch norm, standing statistics."""

from __future__ import annotations

import torch
import torch.nn as nn

from genzoo.gan.latents import sample_latents
from genzoo.seeds import StackedRandomGenerator


def batch_norms(module: nn.Module) -> list[nn.Module]:
    """The batch-norm layers of ``module`` that keep running statistics (BigGAN's ``StatBatchNorm``)."""
    return [m for m in module.modules() if hasattr(m, "accumulate_standing")]


@torch.no_grad()
def standing_stats(
    G: nn.Module, num_batches: int, batch_size: int = 64, truncation: float | None = None, seed: int = 0
) -> None:
    """Replace G's running BN statistics by their average over ``num_batches`` batches of its own
    samples (BigGAN-PyTorch's "standing statistics"; Brock et al. 2019, App. C.1).

    The draws use seeds ``seed·10⁶ + i``, so the result does not depend on how sampling is batched.
    Statistics are taken at the truncation used for sampling.
    """
    norms = batch_norms(G)
    was_training = G.training
    G.eval()  # spectral-norm vectors stay as they are; only the batch norms see batch statistics
    for bn in norms:
        bn.accumulate_standing(True)
        bn.train()
    try:
        num_classes = max(int(getattr(G, "num_classes", 1)), 1)
        for b in range(num_batches):
            seeds = [seed * 1_000_000 + b * batch_size + i for i in range(batch_size)]
            device = next(G.parameters()).device
            rng = StackedRandomGenerator(device, seeds)
            z = sample_latents(rng, G.z_dim, truncation, getattr(G, "truncation_style", "resample"))
            labels = rng.randint(0, num_classes, [len(seeds)])
            G(z, labels, truncation=truncation)
    finally:
        for bn in norms:
            bn.accumulate_standing(False)
        G.train(was_training)


@torch.no_grad()
def generate(
    G: nn.Module,
    rng: StackedRandomGenerator,
    class_labels: torch.Tensor | None,
    truncation: float | None = None,
) -> torch.Tensor:
    """One image per seed of ``rng`` from a BigGAN-style generator in eval mode, in [-1, 1]."""
    G.eval()
    z = sample_latents(rng, G.z_dim, truncation, getattr(G, "truncation_style", "resample"))
    if class_labels is None:
        class_labels = torch.zeros(len(rng), dtype=torch.long, device=rng.device)
    return G(z, class_labels, truncation=truncation).clamp(-1, 1)
