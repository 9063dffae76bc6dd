"""Training objectives of consistency models for the shared engine: distillation (CD), training (CT) and
improved training (iCT).

- CD (Consistency Models, Algorithm 2): σ_n on an N-point Karras grid, n uniform; x_{n+1} = x + σ_{n+1}z;
  one Heun (or Euler) step of the teacher's probability-flow ODE gives x̂_n; the loss is
  d(f_θ(x_{n+1}, σ_{n+1}), f_θ⁻(x̂_n, σ_n)) with θ⁻ the EMA target (μ) run with the same dropout mask.
- CT (Algorithm 3): x̂_n = x + σ_n z with the same z (the Euler step with the true x), N(k) and μ(k) schedules.
- iCT (Song & Dhariwal 2023): no EMA target (θ⁻ = stopgrad θ), pseudo-Huber distance, lognormal
  pair sampling, doubling curriculum for N, weight λ = 1/(σ_{n+1} − σ_n).
- ECT (Geng et al. 2024, "Consistency Models Made Easy"): the student starts from a diffusion model;
  t ~ lognormal(P_mean, P_std), r = t − Δt with Δt shrinking in stages (stage 0: r = 0, diffusion
  training); no EMA target (θ⁻ = stopgrad θ, same dropout mask); target x where r ≤ σ_min; loss
  d(f_θ(x+tz, t), f_θ⁻(x+rz, r)) / (t − r) with the pseudo-Huber (or L2) distance d. With a teacher the
  point at r is one step of the (guided) teacher's ODE from x+tz instead (distillation on ECT's schedule).
- sCM (Lu & Song 2024): TrigFlow student (:mod:`genzoo.consistency.trigflow`), continuous-time loss from the
  JVP tangent, tangent normalisation and warm-up, adaptive weighting; dx_t/dt from data (training) or from
  the teacher's PF-ODE (distillation).
- CD with trajectory targets (``cd_targets="trajectory"``): the student maps every point x_n of the teacher's
  ODE trajectories (from σ_max·z down the N-point grid) to the trajectory's end, the exact consistency
  target, instead of bootstrapping f_θ⁻ one teacher step at a time (:mod:`genzoo.consistency.trajectories`).
- Optional adversarial term (every mode but sCM, as Consistency Trajectory Models, Kim et al. 2024,
  Sec. 4.2): a discriminator D tells data from the student's estimates f_θ(x_{n+1}, σ_{n+1}) (σ_{n+1} a
  point of the Karras grid; ECT draws its own pass at such σ beside its t, r pair); the student adds
  λ·w·ns_G with w = ‖∇_L d‖ / ‖∇_L ns_G‖ at its last layer L (VQGAN's adaptive weight, Esser et al. 2021,
  eq. 7), so λ needs no retuning across datasets; D uses the non-saturating loss with R1.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn as nn

from genzoo.consistency.distances import get_distance
from genzoo.consistency.model import ConsistencyModel, karras_index_sigmas
from genzoo.consistency.schedules import (
    ECT_Q,
    ECT_STAGES,
    ct_num_scales,
    ct_target_ema,
    ect_r,
    ect_stage,
    ict_num_scales,
    ict_pair_probabilities,
    lognormal_sigmas,
)
from genzoo.consistency.trajectories import TrajectoryPool, teacher_ode_solve
from genzoo.errors import UserError
from genzoo.seeds import global_rng_state, set_global_rng_state
from genzoo.train.adversarial import discriminator_loss, frozen, ns_g_loss
from genzoo.train.objective import Batch, Objective, OptimizerSpec, StepResult

MODES = ("cd", "ct", "ict", "ect", "scm")
#: modes without an EMA target network (θ⁻ = stopgrad θ)
SELF_TARGET_MODES = ("ict", "ect", "scm")
SOLVERS = ("heun", "euler")
CD_TARGETS = ("step", "trajectory")
#: the adversarial term's adaptive weight is clamped to at most this (VQGAN's bound, Esser et al. 2021)
ADAPTIVE_MAX = 1e4
#: ECT's loss weightings (``--ect-weighting``): 1/(t − r) (CIFAR-10, the default) or SNR(t) + 1/σ_d²
#: (ImageNet-64)
ECT_WEIGHTINGS = ("dt", "snr")
#: the modes whose noise levels are lognormal, ln σ ~ N(P_mean, P_std²) (``--p-mean``, ``--p-std``)
LOGNORMAL_MODES = ("ict", "ect", "scm")
#: iCT's P_mean, P_std (Song & Dhariwal 2023, Sec. 3.5), which ECT's CIFAR-10 runs keep
ICT_P_MEAN, ICT_P_STD = -1.1, 2.0


def _lognormal_params(mode: str, distilling: bool, p_mean: float | None,
                      p_std: float | None) -> tuple[float, float]:
    """(P_mean, P_std): the given values, else the mode's (iCT/ECT −1.1, 2.0; sCM −1.0, 1.4 in training,
    −0.8, 1.6 in distillation, sCM Sec. 5)."""
    if mode == "scm":
        from genzoo.consistency.trigflow import SCM_P_MEAN, SCM_P_STD

        defaults = (-0.8, 1.6) if distilling else (SCM_P_MEAN, SCM_P_STD)
    else:
        defaults = (ICT_P_MEAN, ICT_P_STD)
    return (float(defaults[0] if p_mean is None else p_mean), float(defaults[1] if p_std is None else p_std))


class ConsistencyObjective(Objective):
    """CD / CT / iCT as an engine Objective. Players: ``{"net": student}`` (a :class:`ConsistencyModel`);
    the EMA target θ⁻ (CD, CT) is persistent state outside the players; the teacher (CD) is kept out of
    the module tree, so it is never saved or trained."""

    ema_players = ("net",)
    sampled_player = "net"

    def __init__(self, student: ConsistencyModel, mode: str = "cd", teacher: Any = None, num_scales: int = 18,
                 total_steps: int = 0, s0: int | None = None, s1: int | None = None, mu0: float | None = None,
                 distance: str | None = None, solver: str = "heun", lr: float = 1e-4,
                 lpips_weights: str | None = None, lpips_size: int | None = None,
                 lpips_mix: float | None = None, p_mean: float | None = None, p_std: float | None = None,
                 teacher_steps: int = 1, discriminator: nn.Module | None = None, gan_weight: float = 0.0,
                 d_lr: float = 2e-3, r1_gamma: float = 0.1, adaptive_max: float = ADAPTIVE_MAX,
                 cd_targets: str = "step",
                 trajectory_pool: int = 1024, trajectory_refresh: int = 1, seed: int = 0,
                 image_shape: tuple[int, ...] | None = None, ect_stages: int = ECT_STAGES,
                 ect_q: float = ECT_Q, ect_weighting: str | None = None, tangent_warmup: int = 0,
                 decay_images: float = 0.0):
        super().__init__()
        if mode not in MODES:
            raise UserError(f"--mode: expected one of {', '.join(MODES)}, got {mode!r}")
        if solver not in SOLVERS:
            raise UserError(f"--solver: expected heun or euler for the teacher step, got {solver!r}")
        self.tangent_warmup = max(int(tangent_warmup), 0)
        if mode == "scm":
            from genzoo.consistency.trigflow import TrigFlowModel

            if not isinstance(student, TrigFlowModel):
                raise ValueError("--mode scm trains a TrigFlowModel student")
        if mode == "cd" and teacher is None:
            raise UserError("--mode cd: consistency distillation needs a teacher (--teacher RUN)")
        if int(teacher_steps) < 1:
            raise UserError(f"--teacher-steps: expected at least 1 ODE step per grid interval, "
                            f"got {teacher_steps}")
        if cd_targets not in CD_TARGETS:
            raise UserError(f"--cd-targets: expected step or trajectory, got {cd_targets!r}")
        if cd_targets == "trajectory" and mode != "cd":
            raise UserError(f"--cd-targets trajectory: needs --mode cd (a teacher), not --mode {mode}")
        if cd_targets == "trajectory" and not 0 < int(trajectory_refresh) <= int(trajectory_pool):
            raise UserError(f"--trajectory-refresh {trajectory_refresh}: expected 1 to --trajectory-pool "
                            f"({trajectory_pool}) trajectories replaced per step")
        self.mode, self.solver, self.lr = mode, solver, float(lr)
        self.decay_images = float(decay_images)
        if not self.decay_images >= 0:
            raise UserError(f"--decay-kimg: expected t_ref ≥ 0 thousand images, got {decay_images / 1000:g}")
        self.cd_targets = cd_targets
        self.teacher_steps = int(teacher_steps)
        self.num_scales, self.total_steps = int(num_scales), int(total_steps)
        defaults = {"cd": (2, 150, 0.95), "ct": (2, 150, 0.95), "ict": (10, 1280, 0.0),
                    "ect": (0, 0, 0.0), "scm": (0, 0, 0.0)}[mode]
        self.s0 = int(defaults[0] if s0 is None else s0)
        self.s1 = int(defaults[1] if s1 is None else s1)
        self.mu0 = float(defaults[2] if mu0 is None else mu0)
        self.distance_name = distance or ("pseudo-huber" if mode in SELF_TARGET_MODES else "l2")
        self.ect_stages, self.ect_q = int(ect_stages), float(ect_q)
        if ect_weighting is not None and (mode != "ect" or ect_weighting not in ECT_WEIGHTINGS):
            raise UserError(f"--ect-weighting: expected one of {', '.join(ECT_WEIGHTINGS)} with --mode ect, "
                            f"got {ect_weighting!r} with --mode {mode}")
        self.ect_weighting = ect_weighting or "dt"
        if mode == "ect" and (self.ect_stages < 1 or self.ect_q <= 1):
            raise UserError(f"--ect-stages/--ect-q: expected at least 1 stage and q > 1, got "
                            f"{ect_stages} and {ect_q}")
        self.distance = get_distance(self.distance_name, lpips_weights, lpips_size, lpips_mix)
        if (p_mean is not None or p_std is not None) and mode not in LOGNORMAL_MODES:
            raise UserError(f"--p-mean/--p-std: only --mode {', '.join(LOGNORMAL_MODES)} draw ln σ from a "
                            f"normal distribution, not --mode {mode}")
        self.p_mean, self.p_std = _lognormal_params(mode, teacher is not None, p_mean, p_std)
        if not self.p_std > 0 or not math.isfinite(self.p_mean) or not math.isfinite(self.p_std):
            raise UserError(f"--p-mean/--p-std: expected a finite P_mean and P_std > 0, got {p_mean} and "
                            f"{p_std}")
        if mode in ("ct", "ict", "ect") and self.total_steps <= 0:
            raise UserError(f"--mode {mode}: the schedule needs the total number of training steps")
        if mode == "cd" and self.num_scales < 2:
            raise UserError(f"--num-scales: expected at least 2 grid points, got {self.num_scales}")
        self.players = nn.ModuleDict({"net": student})
        self.gan_weight, self.d_lr, self.r1_gamma = float(gan_weight), float(d_lr), float(r1_gamma)
        self.adaptive_max = float(adaptive_max)
        if not self.adaptive_max > 0:
            raise UserError(f"--gan-adaptive-max: expected a bound > 0 on the adaptive weight, got "
                            f"{adaptive_max}")
        if (discriminator is None) != (self.gan_weight <= 0):
            raise UserError("--gan-weight: the adversarial term needs a discriminator and a weight > 0")
        if discriminator is not None and mode == "scm":
            raise UserError(f"--gan-weight: the adversarial term is not available with --mode {mode}")
        if discriminator is not None:
            self.players["D"] = discriminator
        if mode not in SELF_TARGET_MODES and cd_targets == "step":  # trajectory targets need no target
            self.target = copy.deepcopy(student).requires_grad_(False)
        if teacher is not None:
            teacher.requires_grad_(False).eval()
        object.__setattr__(self, "teacher", teacher)  # not a submodule: never saved, never trained
        self.pool = None
        if cd_targets == "trajectory":
            if image_shape is None:
                raise ValueError("cd_targets='trajectory' needs the image shape (C, H, W)")
            distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
            rank, world = ((torch.distributed.get_rank(), torch.distributed.get_world_size())
                           if distributed else (0, 1))
            grid = karras_index_sigmas(self.num_scales, student.sigma_min, student.sigma_max, student.rho)
            self.pool = TrajectoryPool(teacher, grid, image_shape, int(getattr(student, "label_dim", 0) or 0),
                                       int(trajectory_pool), int(trajectory_refresh), seed, solver,
                                       self.teacher_steps, student.rho, rank, world)

    # ------------------------------------------------------------------ schedules

    def scales_at(self, step: int) -> int:
        """N, the number of grid points at training step ``step``."""
        if self.mode in ("cd", "ect", "scm"):
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

    def ect_stage_at(self, step: int) -> int:
        """ECT: the stage of the shrinking-Δt curriculum at training step ``step``."""
        return ect_stage(step, self.total_steps, self.ect_stages)

    # ------------------------------------------------------------------ engine contract

    def optimizer_specs(self) -> dict[str, OptimizerSpec]:
        specs = {"net": OptimizerSpec(lr=self.lr, decay_images=self.decay_images)}
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
        if self.pool is not None and player == "net":
            return self._trajectory_loss(len(x), step, x.device)
        if self.mode == "ect" and player == "net":
            return self._ect_loss(x, self._labels(batch, student), step)
        if self.mode == "scm" and player == "net":
            return self._scm_loss(x, self._labels(batch, student), step)
        labels = self._labels(batch, student)
        sigma, sigma_next = self._pair(len(x), step, x.device)
        z = torch.randn_like(x)
        x_noisy = x + z * sigma.reshape(-1, 1, 1, 1)
        if player == "D":
            return self._discriminator_loss(x, x_noisy, sigma, labels)

        rng = global_rng_state(x.device)
        out = student(x_noisy, sigma, labels)
        with torch.no_grad():
            if self.mode == "cd":
                x_next = teacher_ode_solve(self.teacher, x_noisy, sigma, sigma_next, labels, self.solver,
                                           self.teacher_steps, student.rho)
            else:
                x_next = x + z * sigma_next.reshape(-1, 1, 1, 1)
            set_global_rng_state(rng, x.device)  # the target sees the student's dropout mask
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

    def _ect_loss(self, x: torch.Tensor, labels: torch.Tensor | None, step: int) -> StepResult:
        student: ConsistencyModel = self.players["net"]
        t = lognormal_sigmas(len(x), self.p_mean, self.p_std, student.sigma_min, student.sigma_max, x.device)
        r = ect_r(t, self.ect_stage_at(step), self.ect_q)
        per_item = ect_loss(student, x, torch.randn_like(x), t, r, labels, self.distance, self.teacher,
                            self.solver, self.ect_weighting)
        loss = per_item.mean()
        logs = {"ect_stage": float(self.ect_stage_at(step)), "mean_dt": float((t - r).mean())}
        if "D" in self.players:
            # the estimates D judges are drawn as in its own step (σ uniform over the Karras grid's points),
            # not at ECT's t, whose lognormal rarely reaches the large σ one- and two-step sampling start from
            sigma, _ = self._pair(len(x), step, x.device)
            out = student(x + torch.randn_like(x) * sigma.reshape(-1, 1, 1, 1), sigma, labels)
            loss = loss + self._adversarial_term(loss, out, labels, logs)
        return StepResult(loss=loss, logs=logs)

    def _scm_loss(self, x: torch.Tensor, labels: torch.Tensor | None, step: int) -> StepResult:
        from genzoo.consistency.trigflow import scm_loss, teacher_velocity, trigflow_time

        student = self.players["net"]
        sd = student.sigma_data
        sigma = lognormal_sigmas(len(x), self.p_mean, self.p_std, student.sigma_min, student.sigma_max,
                                 x.device)
        t = trigflow_time(sigma, sd)
        shape = (-1,) + (1,) * (x.ndim - 1)
        cos, sin = torch.cos(t).reshape(shape), torch.sin(t).reshape(shape)
        z = torch.randn_like(x) * sd
        x_t = cos * x + sin * z
        if self.teacher is not None:
            with torch.no_grad():
                dxt_dt = teacher_velocity(self.teacher, x_t, t, sd, labels)
        else:
            dxt_dt = cos * z - sin * x
        warmup = min(1.0, step / self.tangent_warmup) if self.tangent_warmup > 0 else 1.0
        loss = scm_loss(student, x_t, t, dxt_dt, labels, warmup).mean()
        return StepResult(loss=loss, logs={"tangent_warmup": warmup})

    def _trajectory_loss(self, n_items: int, step: int, device: torch.device) -> StepResult:
        """d(f_θ(x_n, σ_n), x_end) over random points of the pool's teacher trajectories."""
        with torch.no_grad():
            self.pool.advance(step, device)
        x_n, sigma, target, labels = self.pool.draw(n_items, device)
        out = self.players["net"](x_n, sigma, labels)
        distances = self.distance(out.float(), target)
        loss = distances.mean()
        logs = {"distance": float(distances.detach().mean()), "num_scales": float(self.num_scales)}
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
        loss, logs = discriminator_loss("ns", D(real, d_labels), D(fake, d_labels), real, None, self.r1_gamma)
        return StepResult(loss, logs)

    def _adversarial_term(self, consistency_loss: torch.Tensor, out: torch.Tensor,
                          labels: torch.Tensor | None, logs: dict[str, float]) -> torch.Tensor:
        """λ·w·ns_G(D(f_θ)), w the adaptive weight ‖∇_L consistency‖ / ‖∇_L ns_G‖ (detached), at most
        ``adaptive_max`` (VQGAN's 10⁴ by default)."""
        D = self.players["D"]
        with frozen(D):
            adversarial = ns_g_loss(D(out.float(), self._d_labels(labels, len(out), out.device)))
        last = self.last_layer()
        grad_cons = torch.autograd.grad(consistency_loss, last, retain_graph=True)[0]
        grad_adv = torch.autograd.grad(adversarial, last, retain_graph=True)[0]
        weight = (grad_cons.norm() / (grad_adv.norm() + 1e-4)).clamp(max=self.adaptive_max).detach()
        logs.update({"G/adv": float(adversarial.detach()), "G/adaptive_weight": float(weight)})
        return self.gan_weight * weight * adversarial

    def last_layer(self) -> torch.Tensor:
        """The student's output layer weight: its last registered parameter with ≥ 2 dimensions."""
        return [p for p in self.players["net"].parameters() if p.ndim >= 2][-1]

    def _d_labels(self, labels: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor:
        return labels if labels is not None else torch.zeros(n, dtype=torch.long, device=device)

    @torch.no_grad()
    def after_update(self, player: str, step: int) -> None:
        if self.mode in SELF_TARGET_MODES or self.pool is not None or player != "net":
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


def ect_weight(t: torch.Tensor, r: torch.Tensor, weighting: str = "dt",
               sigma_data: float = 0.5) -> torch.Tensor:
    """ECT's loss weighting: ``dt`` w(t, r) = 1/(t − r) (locuslab/ect, the ECMLoss of the CIFAR-10 runs), or
    ``snr`` w(t) = SNR(t) + 1/σ_d² = (t² + σ_d²)/(t·σ_d)² (its ImageNet-64 runs, ``--wt snrpk``)."""
    if weighting == "snr":
        return (t ** 2 + sigma_data ** 2) / (t * sigma_data) ** 2
    if weighting != "dt":
        raise ValueError(f"unknown ECT weighting {weighting!r}")
    return 1.0 / (t - r)


def teacher_point(teacher: Any, x_t: torch.Tensor, t: torch.Tensor, r: torch.Tensor,
                  labels: torch.Tensor | None, solver: str = "heun",
                  sigma_min: float = 0.002) -> torch.Tensor:
    """x_r: one step of the teacher's probability-flow ODE from x_t at t to r (per item). Euler lands on the
    teacher's x₀ estimate D(x_t, t) at r = 0; the Heun correction is applied where r > σ_min."""
    shape = (-1,) + (1,) * (x_t.ndim - 1)
    denoised = teacher(x_t, t, labels).to(x_t.dtype)
    x_r = denoised + (r / t).reshape(shape) * (x_t - denoised)  # the Euler step, written to be exact at r = 0
    heun = r > sigma_min
    if solver == "heun" and bool(heun.any()):
        r_safe = torch.where(heun, r, t)
        d_next = (x_r - teacher(x_r, r_safe, labels).to(x_t.dtype)) / r_safe.reshape(shape)
        d_cur = (x_t - denoised) / t.reshape(shape)
        corrected = x_t + (r - t).reshape(shape) * 0.5 * (d_cur + d_next)
        x_r = torch.where(heun.reshape(shape), corrected, x_r)
    return x_r


def ect_loss(student: nn.Module, x: torch.Tensor, z: torch.Tensor, t: torch.Tensor, r: torch.Tensor,
             labels: torch.Tensor | None, distance: Any, teacher: Any = None,
             solver: str = "heun", weighting: str = "dt") -> torch.Tensor:
    """Per-item ECT loss w(t, r)·d(f_θ(x_t, t), sg f_θ(x_r, r)) with x_t = x + t·z and x_r = x + r·z, or with
    a ``teacher`` one step of its ODE from x_t to r (:func:`teacher_point`, consistency distillation);
    the target is x_r itself where r ≤ σ_min (the boundary condition f(x, σ_min) = x; r = 0 makes it the
    data, i.e. diffusion training, or the teacher's x₀ estimate). The target pass reuses the student pass's
    dropout mask."""
    shape = (-1,) + (1,) * (x.ndim - 1)
    x_t = x + z * t.reshape(shape)
    if teacher is None:
        x_r = x + z * r.reshape(shape)
    else:
        with torch.no_grad():
            x_r = teacher_point(teacher, x_t, t, r, labels, solver, student.sigma_min)
    rng = global_rng_state(x.device)
    dtype = torch.promote_types(x.dtype, torch.float32)  # bf16 network outputs compared in fp32
    out = student(x_t, t, labels).to(dtype)
    with torch.no_grad():
        boundary = r <= student.sigma_min
        target = x_r.to(dtype)
        if not bool(boundary.all()):
            set_global_rng_state(rng, x.device)
            r_safe = torch.where(boundary, torch.full_like(r, student.sigma_min), r)
            target = torch.where(boundary.reshape(shape), target, student(x_r, r_safe, labels).to(dtype))
    return ect_weight(t, r, weighting, student.sigma_data) * distance(out, target)
