"""Inception Score, precision/recall and KID on feature arrays (numpy or torch)."""

from __future__ import annotations

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def _tensor(array: ArrayLike, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    if isinstance(array, np.ndarray):
        array = torch.from_numpy(array)
    return array.detach().to("cpu", dtype).reshape(len(array), -1)


def inception_score(logits: ArrayLike, splits: int = 10,
                    split_size: int | None = None) -> tuple[float, float]:
    """Inception Score (Salimans et al. 2016): exp E_x KL(p(y|x) || p(y)), per split, (mean, std).

    ``logits`` are the classifier's unbiased logits [N, K]; p(y) is each split's marginal. The
    splits are consecutive blocks: ``splits`` of them, or blocks of ``split_size`` images as in the
    ADM evaluator (which uses 5000; 50,000 images with ``splits=10`` give the same blocks).
    """
    probs = torch.softmax(_tensor(logits, torch.float64), dim=1)
    if len(probs) == 0:
        raise ValueError("inception_score: no logits")
    if split_size is not None:
        parts = torch.split(probs, split_size)
    else:
        parts = torch.tensor_split(probs, min(splits, len(probs)))
    scores = []
    for part in parts:
        marginal = part.mean(dim=0, keepdim=True)
        kl = torch.special.xlogy(part, part) - torch.special.xlogy(part, marginal)
        scores.append(float(torch.exp(kl.sum(dim=1).mean())))
    return float(np.mean(scores)), float(np.std(scores))


def pairwise_sq_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances [len(a), len(b)] via |a|² - 2ab + |b|², clamped at 0."""
    d = (a * a).sum(1, keepdim=True) - 2 * a @ b.T + (b * b).sum(1)[None]
    return d.clamp_min_(0)


def knn_radii(features: torch.Tensor, k: int = 3, batch_size: int = 4096) -> torch.Tensor:
    """Squared distance from each point to its k-th nearest other point of the same set."""
    if len(features) <= k:
        raise ValueError(f"k-NN radii with k={k} need more than {k} points, got {len(features)}")
    radii = []
    for start in range(0, len(features), batch_size):
        d = pairwise_sq_distances(features[start:start + batch_size], features)
        radii.append(d.kthvalue(k + 1, dim=1).values)  # the smallest (k=1) is the point itself at 0
    return torch.cat(radii)


def manifold_coverage(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor,
                      batch_size: int = 4096) -> float:
    """Fraction of ``points`` inside at least one ball (centre, squared radius)."""
    inside = 0
    for start in range(0, len(points), batch_size):
        d = pairwise_sq_distances(points[start:start + batch_size], centres)
        inside += int((d <= radii[None]).any(dim=1).sum())
    return inside / len(points)


def precision_recall(real_features: ArrayLike, fake_features: ArrayLike, k: int = 3,
                     batch_size: int = 4096) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019, eqs. 1-2).

    Each set's manifold is the union of balls reaching each point's k-th nearest neighbour;
    precision is the fraction of fake points inside the real manifold, recall the fraction of real
    points inside the fake one. Distances are computed ``batch_size`` rows at a time.
    """
    real, fake = _tensor(real_features), _tensor(fake_features)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"precision_recall: feature dimensions differ ({real.shape[1]} vs {fake.shape[1]})")
    precision = manifold_coverage(fake, real, knn_radii(real, k, batch_size), batch_size)
    recall = manifold_coverage(real, fake, knn_radii(fake, k, batch_size), batch_size)
    return precision, recall


def _polynomial_mmd2(x: torch.Tensor, y: torch.Tensor, degree: int = 3, coef: float = 1.0) -> float:
    """Unbiased MMD² with the kernel k(a, b) = (aᵀb / d + coef)^degree (Bińkowski et al. 2018, eq. 5)."""
    d = x.shape[1]
    k_xx = (x @ x.T / d + coef) ** degree
    k_yy = (y @ y.T / d + coef) ** degree
    k_xy = (x @ y.T / d + coef) ** degree
    m, n = len(x), len(y)
    return float((k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
                 + (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1)) - 2 * k_xy.mean())


def kid(real_features: ArrayLike, fake_features: ArrayLike, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al. 2018): unbiased polynomial-kernel MMD² averaged over
    ``subsets`` random subsets of ``subset_size`` (capped by the smaller set), (mean, std)."""
    real, fake = _tensor(real_features, torch.float64), _tensor(fake_features, torch.float64)
    size = min(subset_size, len(real), len(fake))
    if size < 2:
        raise ValueError("kid: need at least 2 features in each set")
    if size == len(real) == len(fake):
        subsets = 1  # every subset would be the whole of both sets
    rng = np.random.default_rng(seed)
    values = [_polynomial_mmd2(real[rng.choice(len(real), size, replace=False)],
                               fake[rng.choice(len(fake), size, replace=False)]) for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))
