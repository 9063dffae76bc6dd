"""Gaussian-mixture data with its exact (ideal) denoiser: a benchmark with no network to train.

For x = x0 + σ·n with x0 ~ Σ_k w_k N(μ_k, Σ_k), the noisy density is Σ_k w_k N(μ_k, Σ_k + σ²I) and the
ideal denoiser is E[x0 | x] = Σ_k r_k(x) (μ_k + Σ_k (Σ_k + σ²I)⁻¹ (x − μ_k)), r_k the posterior component
probabilities (Karras et al. 2022, eq. 3 and App. B.3 for the ideal denoiser). Components may carry class
labels: the class-conditional denoiser keeps only that class's components, and ``log p(y | x, σ)`` is a
noise-aware classifier for guidance. Everything is computed in float64.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

Tensor = torch.Tensor


class GaussianMixture:
    """x0 ~ Σ_k w_k N(μ_k, Σ_k) in ``dim`` dimensions; samples are shaped ``[N, *shape]``.

    ``means`` [K, d], ``covs`` [K, d, d] (symmetric positive definite), ``weights`` [K] (normalised
    here), ``classes`` [K] int (optional): the class of each component.
    """

    def __init__(self, means: Tensor, covs: Tensor, weights: Tensor | None = None,
                 classes: Tensor | None = None, shape: tuple[int, ...] | None = None):
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.covs = torch.as_tensor(covs, dtype=torch.float64)
        K, d = self.means.shape
        if self.covs.shape != (K, d, d):
            raise ValueError(f"covs must be [{K}, {d}, {d}], got {tuple(self.covs.shape)}")
        weights = torch.ones(K) if weights is None else torch.as_tensor(weights)
        weights = weights.to(torch.float64)
        self.weights = weights / weights.sum()
        self.classes = None if classes is None else torch.as_tensor(classes, dtype=torch.int64)
        self.num_classes = 0 if self.classes is None else int(self.classes.max()) + 1
        self.shape = tuple(shape) if shape is not None else (d,)
        if math.prod(self.shape) != d:
            raise ValueError(f"shape {self.shape} does not hold {d} values")
        self.eigvals, self.eigvecs = torch.linalg.eigh(self.covs)  # Σ_k = U diag(λ) Uᵀ
        if (self.eigvals <= 0).any():
            raise ValueError("covariances must be positive definite")

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def mean(self) -> Tensor:
        return self.weights @ self.means

    def covariance(self) -> Tensor:
        """Covariance of the whole mixture: Σ w_k (Σ_k + μ_k μ_kᵀ) − μ μᵀ."""
        mu = self.mean()
        outer = self.means[:, :, None] * self.means[:, None, :]
        second = torch.einsum("k,kij->ij", self.weights, self.covs + outer)
        return second - torch.outer(mu, mu)

    @property
    def sigma_data(self) -> float:
        """Root mean variance per dimension (EDM's σ_data)."""
        return float(self.covariance().diagonal().mean().sqrt())

    def sample(self, n: int, generator: torch.Generator | None = None,
               class_labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``n`` draws of x0 (float64 ``[n, *shape]``) and the component each came from.

        With ``class_labels`` [n], each draw comes from that class's components.
        """
        logw = self._log_weights(class_labels, n)
        comp = torch.multinomial(logw.exp(), 1, replacement=True, generator=generator).squeeze(1)
        z = torch.randn(n, self.dim, dtype=torch.float64, generator=generator)
        x = self.means[comp] + torch.einsum("nij,nj->ni", self.eigvecs[comp], z * self.eigvals[comp].sqrt())
        return x.reshape(n, *self.shape), comp

    def _log_weights(self, class_labels: Tensor | None, n: int) -> Tensor:
        """log w_k restricted to each item's class ([n, K]); null labels (None, −1, ≥ classes) keep all."""
        logw = self.weights.log().expand(n, -1).clone()
        if class_labels is None or self.classes is None:
            return logw
        labels = torch.as_tensor(class_labels, dtype=torch.int64).reshape(-1).cpu()
        if labels.numel() == 1:
            labels = labels.expand(n)
        conditional = (labels >= 0) & (labels < self.num_classes)
        outside = conditional[:, None] & (self.classes[None, :] != labels[:, None])
        logw[outside] = -math.inf
        return logw - logw.logsumexp(dim=1, keepdim=True)

    def _components(self, x: Tensor, sigma: Tensor | float) -> tuple[Tensor, Tensor, Tensor]:
        """Per item and component: log N(x; μ_k, Σ_k + σ²I) [n, K], (x − μ_k) in the eigenbasis [n, K, d],
        and the eigenvalues of Σ_k + σ²I [n, K, d]."""
        flat = x.reshape(x.shape[0], -1).to(torch.float64).cpu()
        sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1).cpu()
        sigma = sigma.expand(flat.shape[0]) if sigma.numel() == 1 else sigma
        y = torch.einsum("nkd,kde->nke", flat[:, None, :] - self.means[None], self.eigvecs)
        var = self.eigvals[None] + (sigma ** 2)[:, None, None]
        log_prob = -0.5 * ((y ** 2 / var).sum(-1) + var.log().sum(-1) + self.dim * math.log(2 * math.pi))
        return log_prob, y, var

    def log_prob(self, x: Tensor, sigma: Tensor | float = 0.0, class_labels: Tensor | None = None) -> Tensor:
        """log p_σ(x) (or log p_σ(x | y)): the density of x0 + σn."""
        log_prob, _, _ = self._components(x, sigma)
        return (log_prob + self._log_weights(class_labels, x.shape[0])).logsumexp(dim=1)

    def denoise(self, x: Tensor, sigma: Tensor | float, class_labels: Tensor | None = None) -> Tensor:
        """The ideal denoiser E[x0 | x0 + σn = x] (or E[x0 | x, y])."""
        log_prob, y, var = self._components(x, sigma)
        resp = (log_prob + self._log_weights(class_labels, x.shape[0])).softmax(dim=1)  # r_k(x)
        # Σ_k (Σ_k + σ²I)⁻¹ (x − μ_k), back in the original basis
        shrunk = torch.einsum("nke,kde->nkd", y * self.eigvals[None] / var, self.eigvecs)
        x0 = torch.einsum("nk,nkd->nd", resp, self.means[None] + shrunk)
        return x0.reshape(x.shape).to(device=x.device, dtype=x.dtype)

    def class_logits(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """log p(y | x, σ) for each class [n, num_classes]: an exact noise-aware classifier."""
        if self.classes is None:
            raise ValueError("this mixture has no classes")
        log_joint = self._components(x, sigma)[0] + self.weights.log()[None]
        logits = torch.stack([log_joint[:, self.classes == c].logsumexp(dim=1)
                              for c in range(self.num_classes)], dim=1)
        return (logits - logits.logsumexp(dim=1, keepdim=True)).to(x.device)

    def flow(self, x: Tensor, sigma_from: float, sigma_to: float) -> Tensor:
        """The exact probability-flow ODE solution (EDM eq. 4) for one Gaussian: x(σ_to) from x(σ_from).

        In Σ's eigenbasis each coordinate scales by √((λ + σ_to²)/(λ + σ_from²)) about μ.
        """
        if self.means.shape[0] != 1:
            raise ValueError("the closed-form flow exists for a single Gaussian only")
        flat = x.reshape(x.shape[0], -1).to(torch.float64).cpu()
        lam, U = self.eigvals[0], self.eigvecs[0]
        scale = ((lam + sigma_to ** 2) / (lam + sigma_from ** 2)).sqrt()
        out = self.means[0] + ((flat - self.means[0]) @ U * scale) @ U.T
        return out.reshape(x.shape).to(x.device)


class AnalyticDenoiser(nn.Module):
    """A :class:`GaussianMixture`'s ideal denoiser as a denoiser ``D(x, σ, class_labels)``."""

    sigma_min = 0.0
    sigma_max = float("inf")

    def __init__(self, mixture: GaussianMixture):
        super().__init__()
        self.mixture = mixture
        self.sigma_data = mixture.sigma_data
        self.label_dim = mixture.num_classes

    def round_sigma(self, sigma: Tensor | float) -> Tensor:
        return torch.as_tensor(sigma)

    def forward(self, x: Tensor, sigma: Tensor | float, class_labels: Tensor | None = None, **cond) -> Tensor:
        return self.mixture.denoise(x, sigma, class_labels)


def random_mixture(dim: int = 2, components: int = 4, num_classes: int = 0, seed: int = 0,
                   scale: float = 0.5, spread: float = 1.0) -> GaussianMixture:
    """A reproducible mixture: means ~ N(0, spread²), random covariances with eigenvalues in
    [0.05, 1]·scale², random weights; components assigned to classes round-robin."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(components, dim, generator=g, dtype=torch.float64) * spread
    q, _ = torch.linalg.qr(torch.randn(components, dim, dim, generator=g, dtype=torch.float64))
    eig = (0.05 + 0.95 * torch.rand(components, dim, generator=g, dtype=torch.float64)) * scale ** 2
    covs = q @ torch.diag_embed(eig) @ q.transpose(1, 2)
    weights = 0.5 + torch.rand(components, generator=g, dtype=torch.float64)
    classes = torch.arange(components) % num_classes if num_classes > 0 else None
    return GaussianMixture(means, covs, weights, classes)
