"""Guidance as denoiser wrappers: classifier-free (Ho & Salimans 2021), autoguidance (Karras et al. 2024,
"Guiding a Diffusion Model with a Bad Version of Itself") and classifier guidance (Dhariwal & Nichol
2021); classifier-free and autoguidance can be limited to an interval of noise levels (Kynkäänniemi et
al. 2024, "Applying Guidance in a Limited Interval Improves Sample and Distribution Quality").

Each returns a denoiser, so every sampler works with them unchanged. In σ form the ideal denoiser is
D(x; σ) = x + σ²∇ log p_σ(x) (Tweedie), so a guidance term on the score enters D multiplied by σ².
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from genzoo.errors import UserError
from genzoo.nets.labels import label_indices

Tensor = torch.Tensor


class _Wrapper(nn.Module):
    """A denoiser around ``denoiser`` that keeps its σ range, σ_data and ``round_sigma``."""

    def __init__(self, denoiser: Any):
        super().__init__()
        self.denoiser = denoiser
        for name in ("sigma_min", "sigma_max", "sigma_data", "label_dim", "resolution", "img_channels"):
            if hasattr(denoiser, name):
                setattr(self, name, getattr(denoiser, name))

    def round_sigma(self, sigma: Tensor | float) -> Tensor:
        return self.denoiser.round_sigma(sigma)


Interval = tuple[float, float] | None


def parse_interval(text: str | tuple[float, float] | None, flag: str = "--guidance-interval") -> Interval:
    """``"0.28,5.42"`` -> (0.28, 5.42): guidance applies for σ_lo < σ ≤ σ_hi; None -> always."""
    if text is None or text == "":
        return None
    try:
        lo, hi = (float(v) for v in (text.split(",") if isinstance(text, str) else text))
    except (ValueError, TypeError):
        raise UserError(f"{flag} {text!r}: expected SIGMA_LO,SIGMA_HI, e.g. 0.28,5.42") from None
    if not 0 <= lo < hi:
        raise UserError(f"{flag} {text!r}: expected 0 <= SIGMA_LO < SIGMA_HI")
    return lo, hi


def _inside(sigma: Tensor | float, interval: Interval, batch: int, device: torch.device) -> Tensor:
    """Per item: does guidance apply at this σ (σ_lo < σ ≤ σ_hi, Kynkäänniemi et al. 2024, eq. 4)?"""
    sig = torch.as_tensor(sigma, device=device).reshape(-1).expand(batch)
    if interval is None:
        return torch.ones(batch, dtype=torch.bool, device=device)
    return (sig > interval[0]) & (sig <= interval[1])


class _IntervalGuidance(_Wrapper):
    """D_w = D_weak + w·(D − D_weak) where σ lies in the interval, else D alone (one evaluation)."""

    def __init__(self, denoiser: Any, scale: float, interval: Interval = None):
        super().__init__(denoiser)
        self.scale = float(scale)
        self.interval = parse_interval(interval)

    def both(self, x: Tensor, sigma: Tensor | float, class_labels: Tensor | None,
             cond: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """(D, D_weak) at the same inputs."""
        raise NotImplementedError

    def guided(self, class_labels: Tensor | None) -> bool:
        return self.scale != 1

    def forward(self, x: Tensor, sigma: Tensor | float, class_labels: Tensor | None = None,
                **cond: Any) -> Tensor:
        inside = _inside(sigma, self.interval, x.shape[0], x.device)
        if not self.guided(class_labels) or not bool(inside.any()):
            return self.denoiser(x, sigma, class_labels, **cond)
        main, weak = self.both(x, sigma, class_labels, cond)
        out = weak + self.scale * (main - weak)
        if bool(inside.all()):
            return out
        return torch.where(inside.reshape(-1, *[1] * (x.ndim - 1)), out, main)


class ClassifierFreeGuidance(_IntervalGuidance):
    """D_w(x; σ, y) = D(x; σ, ∅) + w·(D(x; σ, y) − D(x; σ, ∅)) with ∅ the null label (index ``label_dim``).

    w = 1 is the conditional denoiser; the two branches are evaluated as one batch. With ``interval``,
    only σ inside it are guided.
    """

    def __init__(self, denoiser: Any, scale: float, null_label: int | None = None, interval: Interval = None):
        super().__init__(denoiser, scale, interval)
        self.null_label = int(getattr(denoiser, "label_dim", 0) if null_label is None else null_label)

    def guided(self, class_labels: Tensor | None) -> bool:
        return class_labels is not None and self.scale != 1

    def both(self, x, sigma, class_labels, cond):
        sigma = torch.as_tensor(sigma, device=x.device).reshape(-1)
        sigma = sigma.expand(x.shape[0]) if sigma.numel() == 1 else sigma
        if class_labels.is_floating_point() and class_labels.ndim == 2:  # one-hot rows: ∅ is the zero row
            null = torch.zeros_like(class_labels)
        else:
            null = torch.full_like(class_labels, self.null_label)
        out = self.denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), torch.cat([class_labels, null]),
                            **{k: torch.cat([v, v]) if torch.is_tensor(v) else v for k, v in cond.items()})
        cond_out, uncond_out = out.chunk(2)
        return cond_out, uncond_out


class AutoGuidance(_IntervalGuidance):
    """D_w(x; σ, y) = D_0(x; σ, y) + w·(D_1(x; σ, y) − D_0(x; σ, y)) (Karras et al. 2024, eq. 2): the main
    denoiser D_1 guided away from ``guide`` D_0, a smaller or less-trained denoiser of the same task and
    conditioning. w = 1 is the main denoiser alone; with ``interval``, only σ inside it are guided."""

    def __init__(self, denoiser: Any, guide: Any, scale: float, interval: Interval = None):
        super().__init__(denoiser, scale, interval)
        self.guide = guide

    def both(self, x, sigma, class_labels, cond):
        return self.denoiser(x, sigma, class_labels, **cond), self.guide(x, sigma, class_labels, **cond)


class ClassifierGuidance(_Wrapper):
    """D(x; σ, y) + s·σ²·∇_x log p(y | x, σ) from a noise-aware ``classifier(x_noisy, sigma) -> logits``
    (Dhariwal & Nichol 2021, Algorithm 1, in σ form).

    The labels also go to ``denoiser`` (a class-conditional model is guided as in ADM-G; an unconditional
    one ignores them).
    """

    def __init__(self, denoiser: Any, classifier: Callable[[Tensor, Tensor], Tensor], scale: float):
        super().__init__(denoiser)
        self.classifier = classifier
        self.scale = float(scale)

    def log_prob_grad(self, x: Tensor, sigma: Tensor | float, class_labels: Tensor) -> Tensor:
        """∇_x log p(y | x, σ), summed over the batch so each item gets its own gradient."""
        with torch.enable_grad():
            xg = x.detach().to(torch.promote_types(x.dtype, torch.float32)).requires_grad_(True)
            sig = torch.as_tensor(sigma, dtype=xg.dtype, device=x.device).reshape(-1)
            sig = sig.expand(x.shape[0]) if sig.numel() == 1 else sig
            logits = self.classifier(xg, sig)
            logp = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
            index = label_indices(class_labels, logp.shape[1])  # indices or one-hot rows
            picked = logp.gather(1, index.reshape(-1, 1)).sum()
            return torch.autograd.grad(picked, xg)[0].to(x.dtype)

    def forward(self, x: Tensor, sigma: Tensor | float, class_labels: Tensor | None = None,
                **cond: Any) -> Tensor:
        denoised = self.denoiser(x, sigma, class_labels, **cond)
        if class_labels is None or self.scale == 0:
            return denoised
        sig = torch.as_tensor(sigma, dtype=denoised.dtype, device=x.device).reshape(-1)
        sig = sig.reshape(-1, *[1] * (x.ndim - 1))
        grad = self.log_prob_grad(x, sigma, class_labels).to(denoised.dtype)
        return denoised + self.scale * sig ** 2 * grad
