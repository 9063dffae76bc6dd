"""Training objectives of consistency models for the shared engine: distillation (CD), training (CT) and
improved training (iCT).

- CD (Consistency Models, Algorithm 2): σ_n on an N-point Karras grid, n uniform; x_{n+1} = x + σ_{n+1}z;
  one Heun (or Euler) step of the teacher's probability-flow ODE gives x̂_n; the loss is
  d(f_θ(x_{n+1}, σ_{n+1}), f_θ⁻(x̂_n, σ_n)) with θ⁻ the EMA target (μ) run with the same dropout mask.
- CT (Algorithm 3): x̂_n = x + σ_n z with the same z (the Euler step with the true x), N(k) and μ(k) schedules.
- iCT (Song & Dhariwal 2023): no EMA target (θ⁻ = stopgrad θ), pseudo-Huber distance, lognormal
  pair sampling, doubling curriculum for N, weight λ = 1/(σ_{n+1} − σ_n).
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
                 lpips_weights: str | None = None, p_mean: float = -1.1, p_std: float = 2.0):
        super().__init__()
        if mode not in MODES:
            raise UserError(f"--mode: expected one of {', '.join(MODES)}, got {mode!r}")
        if solver not in SOLVERS:
            raise UserError(f"--solver: expected heun or euler for the teacher step, got {solver!r}")
        if mode == "cd" and teacher is None:
            raise UserError("--mode cd: consistency distillation needs a teacher (--teacher RUN)")
        self.mode, self.solver, self.lr = mode, solver, float(lr)
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
        return {"net": OptimizerSpec(lr=self.lr)}

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

        rng = _rng_state(x.device)
        out = student(x_noisy, sigma, labels)
        with torch.no_grad():
            if self.mode == "cd":
                x_next = teacher_ode_step(self.teacher, x_noisy, sigma, sigma_next, labels, self.solver)
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
        return StepResult(loss=loss, logs={"distance": float(distances.detach().mean()), "num_scales": float(
            self.scales_at(step)), "target_ema": self.target_ema_at(step)})

    @torch.no_grad()
    def after_update(self, player: str, step: int) -> None:
        if self.mode == "ict":
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
