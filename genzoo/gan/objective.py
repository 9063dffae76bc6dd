"""The GAN training objective: a discriminator step and a generator step for the shared engine.

Works for any generator ``G(z, class_labels) -> image`` with a ``z_dim`` attribute and any
discriminator ``D(image, class_labels) -> logits``; BigGAN's choices (hinge loss, Adam β = (0, 0.999),
G EMA, orthogonal regularisation) are the defaults of :mod:`genzoo.gan.family`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn as nn

from genzoo.gan.augment import diff_augment, parse_policy
from genzoo.gan.losses import orthogonal_regularization
from genzoo.train.adversarial import check_loss_name, discriminator_loss, frozen, g_loss
from genzoo.train.objective import Batch, Objective, OptimizerSpec, StepResult


class GANObjective(Objective):
    """Players ``G`` and ``D``; schedule ``[("D", d_steps), ("G", 1)]``; the EMA of G is sampled."""

    ema_players = ("G",)
    sampled_player = "G"

    def __init__(
        self,
        G: nn.Module,
        D: nn.Module,
        num_classes: int,
        loss: str = "hinge",
        d_steps: int = 2,
        g_lr: float = 1e-4,
        d_lr: float = 4e-4,
        betas: tuple[float, float] = (0.0, 0.999),
        adam_eps: float = 1e-6,
        ortho_reg: float = 0.0,
        diffaugment: str = "",
        r1_gamma: float = 0.0,
        r2_gamma: float = 0.0,
        ortho_parameters: Callable[[], Iterable[torch.Tensor]] | None = None,
    ):
        super().__init__()
        self.players = nn.ModuleDict({"G": G, "D": D})
        self.num_classes = int(num_classes)
        self.loss_name = check_loss_name(loss)
        self.d_steps = int(d_steps)
        self.g_lr, self.d_lr, self.betas, self.adam_eps = (
            float(g_lr),
            float(d_lr),
            tuple(betas),
            float(adam_eps),
        )
        self.ortho_reg = float(ortho_reg)
        self.policy = parse_policy(diffaugment)
        self.r1_gamma, self.r2_gamma = float(r1_gamma), float(r2_gamma)
        self._ortho_parameters = ortho_parameters or (lambda: (p for p in G.parameters() if p.ndim >= 2))

    def optimizer_specs(self) -> dict[str, OptimizerSpec]:
        return {
            "G": OptimizerSpec(lr=self.g_lr, betas=self.betas, eps=self.adam_eps),
            "D": OptimizerSpec(lr=self.d_lr, betas=self.betas, eps=self.adam_eps),
        }

    def schedule(self) -> list[tuple[str, int]]:
        return [("D", self.d_steps), ("G", 1)]

    def _latents_and_labels(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        n, device = batch.images.shape[0], batch.images.device
        z = torch.randn(n, self.players["G"].z_dim, device=device)
        # Fakes use the batch's classes (the data's class distribution); unlabeled items get class 0.
        labels = (
            batch.labels.to(device).clamp(min=0)
            if self.num_classes > 0
            else torch.zeros(n, dtype=torch.long, device=device)
        )
        return z, labels

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, self.policy) if self.policy else x

    def loss(self, player: str, batch: Batch, step: int) -> StepResult:
        G, D = self.players["G"], self.players["D"]
        z, labels = self._latents_and_labels(batch)
        if player == "D":
            with torch.no_grad():
                fake = G(z, labels)
            real = self._augment(batch.images).detach().requires_grad_(self.r1_gamma > 0)
            fake = self._augment(fake).detach().requires_grad_(self.r2_gamma > 0)
            loss, logs = discriminator_loss(self.loss_name, D(real, labels), D(fake, labels), real, fake,
                                            self.r1_gamma, self.r2_gamma)
            return StepResult(loss, logs)
        if player == "G":
            fake = G(z, labels)
            with frozen(D):
                fake_logits = D(self._augment(fake), labels)
                real_logits = None
                if self.loss_name == "rpgan":  # paired with the batch's real images
                    with torch.no_grad():
                        real_logits = D(self._augment(batch.images), labels)
            loss = g_loss(self.loss_name, fake_logits, real_logits)
            logs = {"G/loss": float(loss.detach())}
            if self.ortho_reg > 0:
                reg = orthogonal_regularization(self._ortho_parameters(), self.ortho_reg).to(loss.device)
                loss = loss + reg
                logs["G/ortho"] = float(reg.detach())
            return StepResult(loss, logs)
        raise ValueError(f"unknown player {player!r}; expected 'G' or 'D'")
