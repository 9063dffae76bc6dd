"""A pool of the teacher's probability-flow ODE trajectories: exact consistency targets for distillation.

A consistency function maps every point of one PF-ODE trajectory to the trajectory's end (Consistency
Models, Sec. 3). CD learns this through the local constraint f(x_{n+1}) ≈ f⁻(x̂_n), one teacher
step at a time, so the target at σ_max is only right once every link below it is. Solving the teacher's
ODE from σ_max·z down the N-point grid gives all N−1 pairs (x_n, σ_n) → x_end of that trajectory at once,
at the cost of one sampler run (``--cd-targets trajectory``). The pool keeps the newest ``size`` of them
and replaces ``refresh`` per training step, so each trajectory is reused for about ``size/refresh`` steps.

Trajectory ``k`` (noise and class label) comes from a generator seeded by ``(seed, k, rank)``, and which
trajectories the pool holds is a function of the step: a resumed run rebuilds the same pool, so resuming
stays exact.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from genzoo.diffusion.samplers import pf_ode_step, rho_spaced
from genzoo.seeds import StackedRandomGenerator
from genzoo.train.data import mix_seed

_STREAM_TRAJECTORY = 11
#: fewest new trajectories solved in one teacher batch, and most (when the pool is (re)built)
BLOCK, BLOCK_MAX = 32, 256


def teacher_ode_step(teacher: Callable[..., torch.Tensor], x: torch.Tensor, sigma: torch.Tensor,
                     sigma_next: torch.Tensor, class_labels: torch.Tensor | None = None,
                     solver: str = "heun") -> torch.Tensor:
    """One teacher step of the probability-flow ODE (:func:`genzoo.diffusion.samplers.pf_ode_step`)."""
    return pf_ode_step(lambda y, s: teacher(y, s, class_labels).to(x.dtype), x, sigma, sigma_next, solver)


def teacher_ode_solve(teacher: Callable[..., torch.Tensor], x: torch.Tensor, sigma: torch.Tensor,
                      sigma_next: torch.Tensor, class_labels: torch.Tensor | None = None,
                      solver: str = "heun", steps: int = 1, rho: float = 7.0) -> torch.Tensor:
    """``steps`` teacher ODE steps from σ to σ_next on the ρ-spaced points between them (EDM eq. 5), so an
    N-point grid with ``steps`` substeps follows the teacher on the (steps·(N−1)+1)-point grid."""
    hi, lo = sigma.double(), sigma_next.double()
    for k in range(steps):
        s_from = rho_spaced(hi, lo, k / steps, rho)
        s_to = rho_spaced(hi, lo, (k + 1) / steps, rho)
        x = teacher_ode_step(teacher, x, s_from.to(sigma.dtype), s_to.to(sigma.dtype), class_labels, solver)
    return x


def teacher_trajectory(teacher: Callable[..., torch.Tensor], noise: torch.Tensor, grid: torch.Tensor,
                       class_labels: torch.Tensor | None, solver: str = "heun", steps: int = 1,
                       rho: float = 7.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's ODE solution from σ_max·noise down the decreasing ``grid`` (σ_max … σ_min):
    (states at grid[0 … N−2] as [n, N−1, C, H, W], the end state at grid[N−1])."""
    x = noise.float() * float(grid[0])
    states = []
    for sigma, sigma_next in zip(grid[:-1].tolist(), grid[1:].tolist()):
        states.append(x)
        s_from = torch.full((len(x),), sigma, device=x.device)
        s_to = torch.full((len(x),), sigma_next, device=x.device)
        x = teacher_ode_solve(teacher, x, s_from, s_to, class_labels, solver, steps, rho).float()
    return torch.stack(states, 1), x


class TrajectoryPool:
    """A ring buffer of ``size`` teacher trajectories on ``grid``, ``refresh`` new ones per training step.

    New trajectories are solved in blocks of at least :data:`BLOCK` (the teacher is faster per image
    in a batch): every ``block_steps`` steps the next ``block_steps·refresh`` replace the oldest.
    Trajectory ``k`` sits in slot ``k mod size``; after step ``s`` the pool holds trajectories
    ``count(s) − size … count(s) − 1`` with ``count(s) = size + (⌊s/block_steps⌋ + 1)·block_steps·refresh``.
    """

    def __init__(self, teacher: Callable[..., torch.Tensor], grid: torch.Tensor, shape: Sequence[int],
                 num_classes: int, size: int = 1024, refresh: int = 1, seed: int = 0, solver: str = "heun",
                 steps: int = 1, rho: float = 7.0, rank: int = 0, world: int = 1):
        if refresh < 1 or size < refresh:
            raise ValueError(f"trajectory pool: expected 1 <= refresh ({refresh}) <= size ({size})")
        self.teacher, self.grid, self.shape = teacher, grid.double(), tuple(int(v) for v in shape)
        self.num_classes, self.size, self.refresh = int(num_classes), int(size), int(refresh)
        self.seed, self.solver, self.steps, self.rho = int(seed), solver, int(steps), float(rho)
        self.rank, self.world = int(rank), int(world)
        self.block_steps = max(1, min(-(-BLOCK // self.refresh), self.size // self.refresh))
        self.count: int | None = None  # trajectories generated so far (this process's numbering)
        self.states = self.ends = self.labels = None

    def count_after(self, step: int) -> int:
        """How many of this process's trajectories exist once ``step`` has been prepared."""
        return self.size + (step // self.block_steps + 1) * self.block_steps * self.refresh

    @torch.no_grad()
    def generate(self, indices: Sequence[int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor,
                                                                             torch.Tensor | None]:
        """(states, ends, labels) of this process's trajectories ``indices``, each from its own seed."""
        seeds = [mix_seed(self.seed, _STREAM_TRAJECTORY, k * self.world + self.rank) for k in indices]
        rng = StackedRandomGenerator(device, seeds)
        noise = rng.randn([len(indices), *self.shape])
        labels = rng.randint(0, self.num_classes, [len(indices)]) if self.num_classes > 0 else None
        states, ends = teacher_trajectory(self.teacher, noise, self.grid.to(device), labels, self.solver,
                                          self.steps, self.rho)
        return states, ends, labels

    def advance(self, step: int, device: torch.device) -> None:
        """Make the pool that of ``step``: solve the trajectories it adds, or the whole pool when it is new
        or ``step`` is not the next one (a resumed run rebuilds exactly the pool it had)."""
        target = self.count_after(step)
        if self.count is None or not 0 <= target - self.count <= self.size:
            first = target - self.size
            self.states = torch.empty(self.size, len(self.grid) - 1, *self.shape, device=device)
            self.ends = torch.empty(self.size, *self.shape, device=device)
            self.labels = (torch.zeros(self.size, dtype=torch.long, device=device)
                           if self.num_classes > 0 else None)
        else:
            first = self.count
        for start in range(first, target, BLOCK_MAX):
            indices = list(range(start, min(start + BLOCK_MAX, target)))
            slots = torch.tensor(indices, device=device) % self.size
            self.states[slots], self.ends[slots], labels = self.generate(indices, device)
            if labels is not None:
                self.labels[slots] = labels
        self.count = target

    def draw(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                           torch.Tensor | None]:
        """``n`` random (x_n, σ_n, x_end, label) from the pool: trajectory and grid point uniform."""
        slot = torch.randint(0, self.size, (n,), device=device)
        point = torch.randint(0, len(self.grid) - 1, (n,), device=device)
        labels = self.labels[slot] if self.labels is not None else None
        return self.states[slot, point], self.grid.to(device)[point].float(), self.ends[slot], labels
