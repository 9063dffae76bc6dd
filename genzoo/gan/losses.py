"""BigGAN's orthogonal regularisation of G's weights.

The adversarial losses and gradient penalties shared with the other families live in
:mod:`genzoo.train.adversarial`.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class _OrthoReg(torch.autograd.Function):
    """β‖W Wᵀ ⊙ (1 − I)‖²_F with the closed-form gradient 4β (W Wᵀ ⊙ (1 − I)) W."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, beta: float) -> torch.Tensor:
        w = weight.reshape(weight.shape[0], -1)
        off = w @ w.t()
        off.fill_diagonal_(0)
        ctx.save_for_backward(weight)
        ctx.beta = beta
        return beta * off.square().sum()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (weight,) = ctx.saved_tensors
        return grad_out * orthogonal_regularization_grad(weight, ctx.beta), None


def orthogonal_regularization_grad(weight: torch.Tensor, beta: float) -> torch.Tensor:
    """d/dW of β‖W Wᵀ ⊙ (1 − I)‖²_F = 4β (W Wᵀ ⊙ (1 − I)) W, with W the weight flattened to [out, fan_in]."""
    w = weight.reshape(weight.shape[0], -1)
    off = w @ w.t()
    off.fill_diagonal_(0)
    return (4.0 * beta * off @ w).reshape(weight.shape)


def orthogonal_regularization(weights: Iterable[torch.Tensor], beta: float) -> torch.Tensor:
    """BigGAN's modified orthogonal regularisation (Brock et al. 2019, eq. 3), summed over ``weights``.

    R_β(W) = β‖WᵀW ⊙ (1 − I)‖²_F with the filters of W as its columns: only the angles between
    filters are pushed towards orthogonality, not their norms. Tensors with fewer than 2 dims are skipped.
    """
    total = None
    for weight in weights:
        if weight.ndim < 2:
            continue
        term = _OrthoReg.apply(weight, float(beta))
        total = term if total is None else total + term
    if total is None:
        return torch.zeros(())
    return total
