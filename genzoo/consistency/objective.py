"""Training objectives of consistency models for the shared engine: distillation (CD), training (CT) and
improved training (iCT).

- CD (Consistency Models, Algorithm 2): σ_n on an N-point Karras grid, n uniform; x_{n+1} = x + σ_{n+1}z;
  one Heun (or Euler) step of the teacher's probability-flow ODE gives x̂_n; the loss is
  d(f_θ(x_{n+1}, σ_{n+1}), f_θ⁻(x̂_n, σ_n)) with θ⁻ the EMA target (μ) run with the same dropout mask.
- CT (Algorithm 3): x̂_n = x + σ_n z with the same z (the Euler step with the true x), N(k) and μ(k) schedules.
- iCT (Song & Dhariwal 2023): no EMA target (θ⁻ = stopgrad θ), pseudo-Huber distance, lognormal
  pair sampling, doubling curriculum for N, weight λ = 1/(σ_{n+1} − σ_n).
- Optional adversarial term (any mode, as Consistency Trajectory Models, Kim et al. 2024, Sec. 4.2): a
  discriminator D tells data from the student's estimates f_θ(x_{n+1}, σ_{n+1}); the student adds
  λ·w·ns_G with w = ‖∇_L d‖ / ‖∇_L ns_G‖ at its last layer L (VQGAN's adaptive weight, Esser et al. 2021,
  eq. 7), so λ needs no retuning across datasets; D uses the non-saturating loss with R1.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from genzoo.consistency.distances import get_distance
from genzoo.consistency.model import ConsistencyModel, karras_index_sigmas
from genzoo.consistency.schedules import ct_num_scales, ct_target_ema, ict_num_scales, ict_pair_probabilities
from genzoo.errors import UserError
from genzoo.gan.losses import ns_d_loss, ns_g_loss, r1_penalty
from genzoo.gan.objective import frozen
from genzoo.train.objective import Batch, Objective, OptimizerSpec, StepResult

MODES = ("cd", "ct", "ict")
SOLVERS = ("heun", "euler")


def teacher_ode_step(teacher: Callable[..., torch.Tensor], x: torch.Tensor, sigma: torch.Tensor,
                     sigma_next: torch.Tensor, class_labels: torch.Tensor | None = None,
                     solver: str = "heun") -> torch.Tensor:
    """One step of the probability-flow ODE dx/dσ = (x − D(x, σ))/σ (EDM eq. 3) from per-sample σ to σ_next
    (both > 0): Euler, plus Heun's trapezoidal correction (EDM Algorithm 1, lines 5-8)."""
    sigma4 = sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
    next4 = sigma_next.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
    d_cur = (x - teacher(x, sigma, class_labels).to(x.dtype)) / sigma4
    x_euler = x + (next4 - sigma4) * d_cur
    if solver == "euler":
        return x_euler
    d_next = (x_euler - teacher(x_euler, sigma_next, class_labels).to(x.dtype)) / next4
    return x + (next4 - sigma4) * 0.5 * (d_cur + d_next)


def teacher_ode_solve(teacher: Callable[..., torch.Tensor], x: torch.Tensor, sigma: torch.Tensor,
                      sigma_next: torch.Tensor, class_labels: torch.Tensor | None = None,
                      solver: str = "heun", steps: int = 1, rho: float = 7.0) -> torch.Tensor:
    """``steps`` teacher ODE steps from σ to σ_next on the ρ-spaced points between them (EDM eq. 5), so an
    N-point grid with ``steps`` substeps follows the teacher on the (steps·(N−1)+1)-point grid."""
    inv_rho = 1.0 / rho
    start, stop = sigma.double() ** inv_rho, sigma_next.double() ** inv_rho
    for k in range(steps):
        s_from = (start + k / steps * (stop - start)) ** rho
        s_to = (start + (k + 1) / steps * (stop - start)) ** rho
        x = teacher_ode_step(teacher, x, s_from.to(sigma.dtype), s_to.to(sigma.dtype), class_labels, solver)
    return x


def _rng_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[torch.Tensor, torch.Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


class ConsistencyObjective(Objective):
    """CD / CT / iCT as an engine Objective. Players: ``{"net": student}`` (a :class:`ConsistencyModel`);
    the EMA target θ⁻ (CD, CT) is persistent state outside the players; the teacher (CD) is kept out of
    the module tree, so it is never saved or trained."""

    ema_players = ("net",)
    sampled_player = "net"

    def __init__(self, student: ConsistencyModel, mode: str = "cd", teacher: Any = None, num_scales: int = 18,
                 total_steps: int = 0, s0: int | None = None, s1: int | None = None, mu0: float | None = None,
                 distance: str | None = None, solver: str = "heun", lr: float = 1e-4,
                 lpips_weights: str | None = None, p_mean: float = -1.1, p_std: float = 2.0,
                 teacher_steps: int = 1, discriminator: nn.Module | None = None, gan_weight: float = 0.0,
                 d_lr: float = 2e-3, r1_gamma: float = 0.1):
        super().__init__()
        if mode not in MODES:
            raise UserError(f"--mode: expected one of {', '.join(MODES)}, got {mode!r}")
        if solver not in SOLVERS:
            raise UserError(f"--solver: expected heun or euler for the teacher step, got {solver!r}")
        if mode == "cd" and teacher is None:
            raise UserError("--mode cd: consistency distillation needs a teacher (--teacher RUN)")
        if int(teacher_steps) < 1:
            raise UserError(f"--teacher-steps: expected at least 1 ODE step per grid interval, "
                            f"got {teacher_steps}")
        self.mode, self.solver, self.lr = mode, solver, float(lr)
        self.teacher_steps = int(teacher_steps)
        self.num_scales, self.total_steps = int(num_scales), int(total_steps)
        defaults = {"cd": (2, 150, 0.95), "ct": (2, 150, 0.95), "ict": (10, 1280, 0.0)}[mode]
        self.s0 = int(defaults[0] if s0 is None else s0)
        self.s1 = int(defaults[1] if s1 is None else s1)
        self.mu0 = float(defaults[2] if mu0 is None else mu0)
        self.distance_name = distance or ("pseudo-huber" if mode == "ict" else "l2")
        self.distance = get_distance(self.distance_name, lpips_weights)
        self.p_mean, self.p_std = float(p_mean), float(p_std)
        if mode in ("ct", "ict") and self.total_steps <= 0:
            raise UserError(f"--mode {mode}: the N(k) schedule needs the total number of training steps")
        if mode == "cd" and self.num_scales < 2:
            raise UserError(f"--num-scales: expected at least 2 grid points, got {self.num_scales}")
        self.players = nn.ModuleDict({"net": student})
        self.gan_weight, self.d_lr, self.r1_gamma = float(gan_weight), float(d_lr), float(r1_gamma)
        if (discriminator is None) != (self.gan_weight <= 0):
            raise UserError("--gan-weight: the adversarial term needs a discriminator and a weight > 0")
        if discriminator is not None:
            self.players["D"] = discriminator
        if mode != "ict":
            self.target = copy.deepcopy(student).requires_grad_(False)
        if teacher is not None:
            teacher.requires_grad_(False).eval()
        object.__setattr__(self, "teacher", teacher)  # not a submodule: never saved, never trained

    # ------------------------------------------------------------------ schedules

    def scales_at(self, step: int) -> int:
        """N, the number of grid points at training step ``step``."""
        if self.mode == "cd":
            return self.num_scales
        if self.mode == "ct":
            return ct_num_scales(step, self.total_steps, self.s0, self.s1)
        return ict_num_scales(step, self.total_steps, self.s0, self.s1)

    def target_ema_at(self, step: int) -> float:
        """μ, the target network's EMA rate at training step ``step`` (0 for iCT: θ⁻ = θ)."""
        if self.mode == "cd":
            return self.mu0
        if self.mode == "ct":
            return ct_target_ema(step, self.total_steps, self.s0, self.s1, self.mu0)
        return 0.0

    # ------------------------------------------------------------------ engine contract

    def optimizer_specs(self) -> dict[str, OptimizerSpec]:
        specs = {"net": OptimizerSpec(lr=self.lr)}
        if "D" in self.players:  # StyleGAN2's D optimiser (β = (0, 0.99))
            specs["D"] = OptimizerSpec(lr=self.d_lr, betas=(0.0, 0.99))
        return specs

    def schedule(self) -> list[tuple[str, int]]:
        return [("D", 1), ("net", 1)] if "D" in self.players else [("net", 1)]

    def _pair(self, n_items: int, step: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(σ_{n+1}, σ_n): the student's (larger) and the target's (smaller) noise levels, per item."""
        student: ConsistencyModel = self.players["net"]
        grid = karras_index_sigmas(self.scales_at(step), student.sigma_min, student.sigma_max, student.rho)
        grid = grid.to(device)
        if self.mode == "ict":
            ascending = grid.flip(0)
            probs = ict_pair_probabilities(ascending, self.p_mean, self.p_std)
            i = torch.multinomial(probs.float(), n_items, replacement=True).to(device)
            return ascending[i + 1].float(), ascending[i].float()
        n = torch.randint(0, len(grid) - 1, (n_items,), device=device)
        return grid[n].float(), grid[n + 1].float()

    def loss(self, player: str, batch: Batch, step: int) -> StepResult:
        student: ConsistencyModel = self.players["net"]
        x = batch.images.float()
        labels = self._labels(batch, student)
        sigma, sigma_next = self._pair(len(x), step, x.device)
        z = torch.randn_like(x)
        x_noisy = x + z * sigma.reshape(-1, 1, 1, 1)
        if player == "D":
            return self._discriminator_loss(x, x_noisy, sigma, labels)

        rng = _rng_state(x.device)
        out = student(x_noisy, sigma, labels)
        with torch.no_grad():
            if self.mode == "cd":
                x_next = teacher_ode_solve(self.teacher, x_noisy, sigma, sigma_next, labels, self.solver,
                                           self.teacher_steps, student.rho)
            else:
                x_next = x + z * sigma_next.reshape(-1, 1, 1, 1)
            _set_rng_state(rng, x.device)  # the target sees the student's dropout mask
            target_net = student if self.mode == "ict" else self.target
            target = target_net(x_next, sigma_next, labels).float()
        distances = self.distance(out.float(), target)
        if self.mode == "ict":
            weights = 1.0 / (sigma - sigma_next)
            loss = (weights * distances).mean()
        else:
            loss = distances.mean()
        logs = {"distance": float(distances.detach().mean()), "num_scales": float(self.scales_at(step)),
                "target_ema": self.target_ema_at(step)}
        if "D" in self.players:
            loss = loss + self._adversarial_term(loss, out, labels, logs)
        return StepResult(loss=loss, logs=logs)

    def _discriminator_loss(self, x: torch.Tensor, x_noisy: torch.Tensor, sigma: torch.Tensor,
                            labels: torch.Tensor | None) -> StepResult:
        """Non-saturating D loss, data against the student's estimates f_θ(x_σ, σ), plus R1 on data."""
        D = self.players["D"]
        with torch.no_grad():
            fake = self.players["net"](x_noisy, sigma, labels).float()
        real = x.detach().requires_grad_(self.r1_gamma > 0)
        d_labels = self._d_labels(labels, len(x), x.device)
        real_logits, fake_logits = D(real, d_labels), D(fake, d_labels)
        loss = ns_d_loss(real_logits, fake_logits)
        logs = {"D/loss": float(loss.detach())}
        if self.r1_gamma > 0:
            penalty = r1_penalty(real_logits, real)
            loss = loss + 0.5 * self.r1_gamma * penalty
            logs["D/r1"] = float(penalty.detach())
        return StepResult(loss, logs)

    def _adversarial_term(self, consistency_loss: torch.Tensor, out: torch.Tensor,
                          labels: torch.Tensor | None, logs: dict[str, float]) -> torch.Tensor:
        """λ·w·ns_G(D(f_θ)), w the adaptive weight ‖∇_L consistency‖ / ‖∇_L ns_G‖ (detached)."""
        D = self.players["D"]
        with frozen(D):
            adversarial = ns_g_loss(D(out.float(), self._d_labels(labels, len(out), out.device)))
        last = self.last_layer()
        grad_cons = torch.autograd.grad(consistency_loss, last, retain_graph=True)[0]
        grad_adv = torch.autograd.grad(adversarial, last, retain_graph=True)[0]
        weight = (grad_cons.norm() / (grad_adv.norm() + 1e-4)).clamp(max=1e4).detach()
        logs.update({"G/adv": float(adversarial.detach()), "G/adaptive_weight": float(weight)})
        return self.gan_weight * weight * adversarial

    def last_layer(self) -> torch.Tensor:
        """The student's output layer weight: its last registered parameter with ≥ 2 dimensions."""
        return [p for p in self.players["net"].parameters() if p.ndim >= 2][-1]

    def _d_labels(self, labels: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor:
        return labels if labels is not None else torch.zeros(n, dtype=torch.long, device=device)

    @torch.no_grad()
    def after_update(self, player: str, step: int) -> None:
        if self.mode == "ict" or player != "net":
            return
        mu = self.target_ema_at(step)
        for tgt, src in zip(self.target.parameters(), self.players["net"].parameters()):
            tgt.lerp_(src.detach(), 1 - mu)
        for tgt, src in zip(self.target.buffers(), self.players["net"].buffers()):
            tgt.copy_(src)

    @staticmethod
    def _labels(batch: Batch, student: ConsistencyModel) -> torch.Tensor | None:
        if int(getattr(student, "label_dim", 0) or 0) <= 0:
            return None
        if (batch.labels < 0).any():
            raise UserError("a class-conditional consistency model needs labelled data (the dataset has "
                            "unlabelled items)")
        return batch.labels
