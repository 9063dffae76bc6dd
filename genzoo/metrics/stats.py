"""Gaussian feature statistics and the Fréchet distance between them (FID, sFID, FD in any feature space).

:class:`FeatureStats` accumulates running float64 sums batch by batch, so the statistics of any number
of images need memory for one batch plus two D×D matrices, never the whole feature set.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import torch

ArrayLike = np.ndarray | torch.Tensor


def _as_float64(array: ArrayLike) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().double().numpy()
    return np.asarray(array, dtype=np.float64)


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike,
                     eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017, eq. 6):
    ``|mu1 - mu2|² + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^½)``, in float64.

    A near-singular product (too few samples for the dimension) whose square root is not finite is
    retried with ``eps`` added to both diagonals; a square root with a non-negligible imaginary part
    raises, a negligible one is dropped.
    """
    mu1, mu2 = np.atleast_1d(_as_float64(mu1)), np.atleast_1d(_as_float64(mu2))
    sigma1, sigma2 = np.atleast_2d(_as_float64(sigma1)), np.atleast_2d(_as_float64(sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"mismatched statistics: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs "
                         f"{sigma2.shape}")
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        warnings.warn(f"Fréchet distance: singular product; adding {eps} to the covariance diagonals",
                      stacklevel=2)
        offset = np.eye(len(mu1)) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Fréchet distance: matrix square root has an imaginary component "
                             f"{np.max(np.abs(covmean.imag)):.3g}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return scipy.linalg.sqrtm(matrix)
        except (ValueError, np.linalg.LinAlgError):
            return np.full_like(matrix, np.nan)


class FeatureStats:
    """Streaming mean and covariance of feature vectors (running float64 sums).

    Sums are taken around a shift (the first batch's mean) so that the covariance does not lose
    precision to cancellation when features have a large common offset.
    """

    def __init__(self) -> None:
        self.count = 0
        self._shift: np.ndarray | None = None
        self._sum: np.ndarray | None = None
        self._outer: np.ndarray | None = None

    @property
    def dim(self) -> int | None:
        return None if self._shift is None else len(self._shift)

    def update(self, features: ArrayLike) -> None:
        """Add a batch of features [N, D] (any float dtype; flattened beyond the first axis)."""
        batch = _as_float64(features)
        batch = batch.reshape(len(batch), -1)
        if len(batch) == 0:
            return
        if self._shift is None:
            self._shift = batch.mean(axis=0)
            self._sum = np.zeros_like(self._shift)
            self._outer = np.zeros((len(self._shift), len(self._shift)))
        elif batch.shape[1] != len(self._shift):
            raise ValueError(f"feature dimension {batch.shape[1]} differs from earlier {len(self._shift)}")
        centred = batch - self._shift
        self._sum += centred.sum(axis=0)
        self._outer += centred.T @ centred
        self.count += len(batch)

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """(mu [D], sigma [D, D]) with the unbiased (N - 1) covariance, as numpy's ``np.cov``."""
        if self.count < 2:
            raise ValueError(f"statistics need at least 2 feature vectors, got {self.count}")
        mean_centred = self._sum / self.count
        cov = (self._outer - self.count * np.outer(mean_centred, mean_centred)) / (self.count - 1)
        return mean_centred + self._shift, cov


def mean_cov(features: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of a whole feature array [N, D]."""
    stats = FeatureStats()
    stats.update(features)
    return stats.mean_cov()


def frechet_distance_features(features1: ArrayLike, features2: ArrayLike) -> float:
    """Fréchet distance between two feature sets [N, D] in any feature space."""
    return frechet_distance(*mean_cov(features1), *mean_cov(features2))
