"""Consistency distillation and training: CD on the exact Gaussian-mixture teacher, objective mechanics."""

import copy

import pytest
import torch
import torch.nn as nn

from genzoo.consistency import ConsistencyModel
from genzoo.consistency.model import karras_index_sigmas
from genzoo.consistency.objective import ConsistencyObjective
from genzoo.consistency.trajectories import teacher_ode_solve, teacher_ode_step
from genzoo.diffusion.analytic import AnalyticDenoiser, GaussianMixture, random_mixture
from genzoo.errors import UserError
from genzoo.train.objective import Batch


class MLP(nn.Module):
    """A small network on [N, d, 1, 1] points with a Fourier embedding of the noise label."""

    def __init__(self, dim=2, hidden=64, dropout=0.0):
        super().__init__()
        self.resolution, self.in_channels, self.out_channels, self.label_dim = 1, dim, dim, 0
        self.body = nn.Sequential(nn.Linear(dim + 8, hidden), nn.SiLU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, dim))
        self.register_buffer("freqs", torch.arange(4).float().exp())

    def forward(self, x, noise_labels, class_labels=None):
        t = noise_labels.reshape(-1, 1).float() * self.freqs[None]
        return self.body(torch.cat([x.flatten(1), t.sin(), t.cos()], 1)).reshape(x.shape)


def _mixture():
    m = random_mixture(dim=2, components=3, seed=1, scale=0.3, spread=0.8)
    return GaussianMixture(m.means, m.covs, m.weights, shape=(2, 1, 1))


def energy_distance(a, b):
    a, b = a.flatten(1).double(), b.flatten(1).double()
    return float(2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean() - torch.cdist(b, b).mean())


def _batch(mix, n, g):
    return Batch(images=mix.sample(n, g)[0].float(), labels=torch.full((n,), -1))


def one_step_curve(objective, mix, steps, make_batch):
    """Train ``objective``'s student (Adam 3e-3) for ``steps`` steps; its one-step energy distance to the
    mixture before training and after every 80 steps."""
    student = objective.players["net"]
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(5)
    reference = mix.sample(1000, g)[0].float()
    z = torch.randn(1000, 2, 1, 1, generator=g)

    def one_step_distance():
        with torch.no_grad():
            return energy_distance(student(z * student.sigma_max, student.sigma_max), reference)

    distances = [one_step_distance()]
    for step in range(steps):
        result = objective.loss("net", make_batch(g), step)
        opt.zero_grad()
        result.loss.backward()
        opt.step()
        objective.after_update("net", step)
        if step % 80 == 79:
            distances.append(one_step_distance())
    return distances


def test_cd_on_the_exact_mixture_teacher_lowers_the_one_step_distance():
    torch.manual_seed(0)
    mix = _mixture()
    student = ConsistencyModel(MLP(), sigma_data=mix.sigma_data)
    objective = ConsistencyObjective(student, "cd", AnalyticDenoiser(mix), num_scales=10, mu0=0.95)
    distances = one_step_curve(objective, mix, 240, lambda g: _batch(mix, 128, g))
    assert distances[1] < distances[0]
    assert distances[-1] < 0.15 * distances[0], distances
    assert "teacher" not in dict(objective.named_modules())  # never saved
    assert any(k.startswith("target.") for k in objective.state_dict())


def test_heun_step_of_the_exact_teacher_follows_the_closed_form_flow():
    cov = torch.diag(torch.tensor([0.3, 0.05])).unsqueeze(0)
    mix = GaussianMixture(torch.zeros(1, 2), cov, shape=(2, 1, 1))
    x = torch.randn(64, 2, 1, 1, dtype=torch.float64) * 3
    sigma, sigma_next = torch.full((64,), 3.0), torch.full((64,), 2.8)
    exact = mix.flow(x, 3.0, 2.8)
    heun = teacher_ode_step(AnalyticDenoiser(mix), x, sigma, sigma_next, solver="heun")
    euler = teacher_ode_step(AnalyticDenoiser(mix), x, sigma, sigma_next, solver="euler")
    heun_err, euler_err = (heun - exact).abs().max(), (euler - exact).abs().max()
    assert heun_err < 1e-4 and heun_err < euler_err / 5


def test_teacher_substeps_follow_the_refined_karras_grid():
    cov = torch.diag(torch.tensor([0.3, 0.05])).unsqueeze(0)
    mix = GaussianMixture(torch.zeros(1, 2), cov, shape=(2, 1, 1))
    teacher = AnalyticDenoiser(mix)
    coarse, fine = karras_index_sigmas(4), karras_index_sigmas(3 * 3 + 1)  # 3 substeps per interval
    assert torch.allclose(coarse, fine[::3])
    n = torch.tensor([0, 1, 2, 1])  # per-sample intervals of the coarse grid
    x = torch.randn(4, 2, 1, 1, dtype=torch.float64) * coarse[n].reshape(-1, 1, 1, 1)
    solved = teacher_ode_solve(teacher, x, coarse[n], coarse[n + 1], steps=3)
    chained = x
    for k in range(3):
        chained = teacher_ode_step(teacher, chained, fine[3 * n + k], fine[3 * n + k + 1])
    torch.testing.assert_close(solved, chained)
    exact = torch.cat([mix.flow(x[i:i + 1], float(coarse[j]), float(coarse[j + 1])) for i, j in enumerate(n)])
    one = teacher_ode_solve(teacher, x, coarse[n], coarse[n + 1], steps=1)
    assert (solved - exact).abs().max() < (one - exact).abs().max() / 4
    with pytest.raises(UserError, match="--teacher-steps"):
        ConsistencyObjective(ConsistencyModel(MLP()), "cd", teacher, teacher_steps=0)


class PointD(nn.Module):
    """A discriminator on [N, 2, 1, 1] points with the (x, class_labels) signature of BigGAN's."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(2, 32), nn.SiLU(), nn.Linear(32, 1))

    def forward(self, x, class_labels):
        return self.body(x.flatten(1)).squeeze(1)


def test_adversarial_term_trains_d_and_matches_the_consistency_gradient_at_the_last_layer():
    torch.manual_seed(0)
    mix = _mixture()
    student = ConsistencyModel(MLP())
    objective = ConsistencyObjective(student, "cd", AnalyticDenoiser(mix), num_scales=10,
                                     discriminator=PointD(), gan_weight=0.5, d_lr=1e-3, r1_gamma=0.1)
    assert objective.schedule() == [("D", 1), ("net", 1)]
    d_spec = objective.optimizer_specs()["D"]
    assert d_spec.betas == (0.0, 0.99) and d_spec.lr == 1e-3
    assert objective.last_layer() is student.model.body[-1].weight
    batch = _batch(mix, 64, torch.Generator().manual_seed(0))
    d_result = objective.loss("D", batch, 0)
    d_result.loss.backward()
    assert "D/r1" in d_result.logs and all(p.grad is None for p in student.parameters())
    assert all(p.grad is not None for p in objective.players["D"].parameters())
    objective.zero_grad(set_to_none=True)
    result = objective.loss("net", batch, 0)
    logs = result.logs
    expected = logs["distance"] + 0.5 * logs["G/adaptive_weight"] * logs["G/adv"]
    assert float(result.loss.detach()) == pytest.approx(expected, rel=1e-5)
    result.loss.backward()
    assert all(p.grad is None for p in objective.players["D"].parameters())  # D is frozen in the net's step
    # the adaptive weight w makes λ·w·ns_G pull on the last layer as hard as λ times the consistency loss
    x = torch.randn(16, 2, 1, 1)
    out = student(x * 2.0, torch.full((16,), 2.0))
    consistency = (out - x).square().mean()
    term = objective._adversarial_term(consistency, out, None, {})
    last = objective.last_layer()
    g_term = torch.autograd.grad(term, last, retain_graph=True)[0]
    g_cons = torch.autograd.grad(consistency, last, retain_graph=True)[0].norm()
    adversarial = nn.functional.softplus(-objective.players["D"](out, None)).mean()  # ns_G
    g_adv = torch.autograd.grad(adversarial, last)[0].norm()
    assert float(g_term.norm()) == pytest.approx(float(0.5 * g_cons * g_adv / (g_adv + 1e-4)), rel=1e-4)
    with pytest.raises(UserError, match="--gan-weight"):
        ConsistencyObjective(ConsistencyModel(MLP()), "cd", AnalyticDenoiser(mix), gan_weight=1.0)


def test_target_uses_the_students_dropout_mask_and_follows_mu():
    torch.manual_seed(0)
    mix = _mixture()
    student = ConsistencyModel(MLP(dropout=0.5))
    objective = ConsistencyObjective(student, "ct", total_steps=100, mu0=0.9).train()
    # identical weights + identical dropout masks: at σ_{n+1} = σ_n the loss would vanish, so compare the
    # target's and the student's outputs on the same input with the RNG state restored
    from genzoo.seeds import global_rng_state, set_global_rng_state

    x = torch.randn(8, 2, 1, 1)
    state = global_rng_state(x.device)
    a = student(x, 1.0)
    set_global_rng_state(state, x.device)
    b = objective.target(x, 1.0)
    assert torch.equal(a, b)
    before = copy.deepcopy(objective.target.state_dict())
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    objective.after_update("net", 0)  # μ(0) = 0.9
    key = next(k for k in before if k.endswith("weight"))
    expected = 0.9 * before[key] + 0.1 * (before[key] + 1.0)
    assert torch.allclose(objective.target.state_dict()[key], expected, atol=1e-6)
    assert objective.scales_at(0) == 2 and objective.scales_at(100) == 151
    result = objective.loss("net", _batch(mix, 16, torch.Generator().manual_seed(0)), 50)
    assert result.loss.requires_grad and result.logs["num_scales"] == objective.scales_at(50)


def test_ict_has_no_target_network_and_weights_pairs():
    torch.manual_seed(0)
    mix = _mixture()
    objective = ConsistencyObjective(ConsistencyModel(MLP()), "ict", total_steps=800)
    assert not hasattr(objective, "target") or objective.__dict__.get("target") is None
    assert objective.distance_name == "pseudo-huber" and objective.scales_at(0) == 11
    result = objective.loss("net", _batch(mix, 32, torch.Generator().manual_seed(0)), 0)
    result.loss.backward()
    assert torch.isfinite(result.loss)
    sigma, sigma_next = objective._pair(4000, 0, torch.device("cpu"))
    assert (sigma > sigma_next).all()
    # lognormal pair sampling puts most pairs near σ ≈ exp(−1.1), few at σ_max
    assert (sigma < 5).float().mean() > 0.7


def test_objective_errors():
    with pytest.raises(UserError, match="--teacher"):
        ConsistencyObjective(ConsistencyModel(MLP()), "cd")
    with pytest.raises(UserError, match="--mode"):
        ConsistencyObjective(ConsistencyModel(MLP()), "xx")
    with pytest.raises(UserError, match="total number of training steps"):
        ConsistencyObjective(ConsistencyModel(MLP()), "ct")
