"""Class labels in the two forms genzoo's networks take: indices ``[B]`` and EDM's one-hot ``[B, label_dim]``.

genzoo's own networks take int64 indices with ``label_dim`` (or any negative index) meaning "no label",
the null label of classifier-free guidance. EDM's networks take float one-hot rows, where the all-zero
row is that null label (EDM's label dropout multiplies the row by 0). Every denoiser converts what it is
given to what its network takes, so samplers and guidance work with either form.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from genzoo.errors import UserError


def label_indices(labels: torch.Tensor, label_dim: int) -> torch.Tensor:
    """Indices ``[B]`` (int64) from indices or one-hot rows; a zero row or negative index -> ``label_dim``."""
    labels = torch.as_tensor(labels)
    if labels.ndim == 2 and labels.shape[1] == label_dim and labels.is_floating_point():
        index = labels.argmax(dim=1)
        return torch.where(labels.abs().sum(dim=1) == 0, label_dim, index)
    if labels.is_floating_point() or labels.ndim > 1:
        raise UserError(f"class labels: expected int indices [B] or one-hot rows [B, {label_dim}], got a "
                        f"{str(labels.dtype).replace('torch.', '')} tensor of shape {list(labels.shape)}")
    labels = labels.reshape(-1).to(torch.int64)
    return torch.where((labels < 0) | (labels > label_dim), label_dim, labels)


def one_hot_labels(labels: torch.Tensor | None, label_dim: int, batch: int,
                   device: torch.device | None = None) -> torch.Tensor:
    """EDM's float32 one-hot rows ``[B, label_dim]`` from indices, one-hot rows or None (all zero rows).

    One-hot input is passed through as float32 (EDM also accepts soft or scaled rows); an index equal to
    ``label_dim`` or negative gives the zero row.
    """
    if labels is None:
        return torch.zeros(batch, label_dim, device=device)
    labels = torch.as_tensor(labels, device=device)
    if labels.is_floating_point() and labels.ndim == 2:
        if labels.shape[1] != label_dim:
            raise UserError(f"class labels: one-hot rows of width {labels.shape[1]} for a model with "
                            f"{label_dim} classes")
        return labels.to(torch.float32)
    index = label_indices(labels, label_dim)
    return F.one_hot(index, label_dim + 1)[:, :label_dim].to(torch.float32)
