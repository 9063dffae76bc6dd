"""Samplers on the exact Gaussian-mixture benchmark: exactness, convergence order, NFE, seeds."""

import math

import numpy as np
import pytest
import torch

from genzoo.diffusion import samplers as S
from genzoo.diffusion.analytic import AnalyticDenoiser, GaussianMixture, random_mixture
from genzoo.diffusion.precond import iddpm_sigmas
from genzoo.seeds import StackedRandomGenerator


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny float64 batches: thread start-up dominates, so run them on one thread.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def latents(n, d, seed=1):
    return torch.randn(n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def mixture():
    return random_mixture(dim=3, components=3, seed=0)


def reference_alg2(net, z, num_steps, sigma_min, sigma_max, rho, S_churn, S_min, S_max, S_noise, randn_like):
    """EDM Algorithm 2 transcribed from the paper, as a check of the general implementation."""
    sigma_min, sigma_max = max(sigma_min, net.sigma_min), min(sigma_max, net.sigma_max)
    i = np.arange(num_steps, dtype=np.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    t = (hi + i / (num_steps - 1) * (lo - hi)) ** rho
    t = list(net.round_sigma(torch.from_numpy(t)).tolist()) + [0.0]
    x = z.double() * t[0]
    for n in range(num_steps):
        gamma = min(S_churn / num_steps, math.sqrt(2) - 1) if S_min <= t[n] <= S_max else 0.0
        t_hat = t[n] * (1 + gamma)
        x_hat = x + math.sqrt(t_hat ** 2 - t[n] ** 2) * S_noise * randn_like(x)
        d = (x_hat - net(x_hat, t_hat).double()) / t_hat
        x = x_hat + (t[n + 1] - t_hat) * d
        if n < num_steps - 1:
            d2 = (x - net(x, t[n + 1]).double()) / t[n + 1]
            x = x_hat + (t[n + 1] - t_hat) * (d + d2) / 2
    return x


@pytest.mark.parametrize("churn", [0.0, 30.0])
def test_edm_sampler_is_algorithm_2(mixture, churn):
    D = AnalyticDenoiser(mixture)
    z = latents(16, 3)
    kw = dict(num_steps=7, sigma_min=0.002, sigma_max=80, rho=7, S_churn=churn, S_min=0.05, S_max=50,
              S_noise=1.003)
    ours = S.edm_sampler(D, z, **kw, randn_like=StackedRandomGenerator("cpu", range(16)).randn_like)
    ref = reference_alg2(D, z, **kw, randn_like=StackedRandomGenerator("cpu", range(16)).randn_like)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    if churn:
        assert not torch.allclose(ours, S.edm_sampler(D, z, num_steps=7))


def test_nfe_of_each_sampler(mixture):
    z = latents(4, 3)
    expected = {S.edm_sampler: 2 * 6 - 1, S.euler_sampler: 6, S.heun_sampler: 11, S.ddim_sampler: 6,
                S.ddpm_sampler: 6, S.dpmpp_2m_sampler: 6}
    for fn, nfe in expected.items():
        counter = S.NFECounter(AnalyticDenoiser(mixture))
        out = fn(counter, z, num_steps=6)
        assert counter.nfe == nfe, fn.__name__
        assert out.shape == z.shape and out.dtype == torch.float64


def test_heun_reproduces_exact_flow_of_one_gaussian():
    g = random_mixture(dim=3, components=1, seed=2)
    z = latents(256, 3)
    exact = g.flow(z * 80, 80.0, 0.0)
    errors = []
    for steps in (16, 32):
        x = S.edm_sampler(AnalyticDenoiser(g), z, num_steps=steps)
        errors.append((x - exact).norm(dim=1).mean().item())
    scale = exact.std(0).norm().item()
    assert errors[1] < 0.02 * scale  # 63 NFE: within 2% of the data scale
    assert 3.0 < errors[0] / errors[1] < 5.5  # and second-order convergence toward it


def test_exact_flow_is_the_ode_solution():
    """The closed form satisfies dx/dσ = (x − D(x; σ))/σ (EDM eq. 4 with σ(t) = t)."""
    g = random_mixture(dim=3, components=1, seed=2)
    x1 = g.flow(latents(8, 3) * 2.0, 2.0, 1.0)
    h = 1e-5
    deriv = (g.flow(x1, 1.0, 1.0 + h) - g.flow(x1, 1.0, 1.0 - h)) / (2 * h)
    torch.testing.assert_close(deriv, (x1 - g.denoise(x1, 1.0)) / 1.0, rtol=1e-6, atol=1e-8)


def orders(fn, D, z, steps=(16, 32, 64), ref_steps=768, **kw):
    ref = S.heun_sampler(D, z, num_steps=ref_steps, **kw)
    errs = [(fn(D, z, num_steps=n, **kw) - ref).norm(dim=1).mean().item() for n in steps]
    return [math.log2(a / b) for a, b in zip(errs[:-1], errs[1:])]


def test_convergence_orders(mixture):
    D = AnalyticDenoiser(mixture)
    z = latents(128, 3)
    for fn in (S.euler_sampler, S.ddim_sampler):
        assert all(0.8 < p < 1.3 for p in orders(fn, D, z)), fn.__name__
    for fn in (S.heun_sampler, S.dpmpp_2m_sampler):
        assert all(1.7 < p < 2.6 for p in orders(fn, D, z)), fn.__name__


def test_ablation_vp_schedule_and_scaling_solve_the_same_ode(mixture):
    D = AnalyticDenoiser(mixture)
    z = latents(64, 3)
    edm = S.heun_sampler(D, z, num_steps=256, discretization="vp")
    vp = S.heun_sampler(D, z, num_steps=256, discretization="vp", schedule="vp", scaling="vp")
    ve = S.heun_sampler(D, z, num_steps=256, discretization="vp", schedule="ve")
    # Same ODE, other parametrisations: agreement up to discretisation error (and the VP schedule's final
    # Euler step from t = ε_s, which does not reach σ = 0 exactly).
    assert (vp - edm).norm(dim=1).mean() < 3e-3
    assert (ve - edm).norm(dim=1).mean() < 3e-3


def test_discretisations():
    edm = S.sigma_steps("edm", 18, 0.002, 80, 7)
    assert edm.dtype == torch.float64 and edm[0] == pytest.approx(80) and edm[-1] == pytest.approx(0.002)
    ve = S.sigma_steps("ve", 10, 0.02, 100)
    np.testing.assert_allclose(np.diff(np.log(ve.numpy())), np.log(0.02 / 100) / 9)
    lo, hi = S.default_sigma_range("vp")
    vp = S.sigma_steps("vp", 10, lo, hi)
    assert vp[0] == pytest.approx(hi) and vp[-1] == pytest.approx(lo)
    assert hi == pytest.approx(float(S.vp_sigma(1.0)))  # β_d, β_min recovered: 19.9, 0.1
    idd = S.sigma_steps("iddpm", 10, 0.002, 81)
    u = iddpm_sigmas()
    assert all(bool((u == s).any()) for s in idd) and idd[0] <= 81 and idd[-1] >= 0.002


def test_ddpm_step_is_the_posterior_of_ho_et_al():
    """One DDIM(η=1) step in σ form = q(x_{t−1} | x_t, x0) of DDPM in ᾱ form (mean and variance)."""
    s, s_next = torch.tensor(2.0, dtype=torch.float64), torch.tensor(0.7, dtype=torch.float64)
    a_t, a_prev = 1 / (1 + s ** 2), 1 / (1 + s_next ** 2)
    beta = 1 - a_t / a_prev
    down, up = S.ancestral_step(s, s_next, 1.0)
    x0, x_vp = torch.tensor(0.3, dtype=torch.float64), torch.tensor(-1.1, dtype=torch.float64)
    mean_vp = (a_prev.sqrt() * beta / (1 - a_t)) * x0 + ((1 - beta).sqrt() * (1 - a_prev) / (1 - a_t)) * x_vp
    var_vp = (1 - a_prev) / (1 - a_t) * beta
    x = x_vp / a_t.sqrt()  # σ form: x / √ᾱ
    mean_ours = x0 + down / s * (x - x0)
    torch.testing.assert_close(mean_ours * a_prev.sqrt(), mean_vp)
    torch.testing.assert_close(up ** 2 * a_prev, var_vp)


def test_same_seed_same_sample_for_any_batch_size(mixture):
    D = AnalyticDenoiser(mixture)
    seeds = [5, 9, 11, 40]

    def run(fn, batch, **kw):
        rng = StackedRandomGenerator("cpu", batch)
        z = rng.randn([len(batch), 3], dtype=torch.float64)
        return fn(D, z, randn_like=rng.randn_like, num_steps=5, **kw)

    cases = ((S.edm_sampler, dict(S_churn=40, S_max=50)), (S.ddpm_sampler, {}),
             (S.ddim_sampler, {"eta": 0.5}))
    for fn, kw in cases:
        together = run(fn, seeds, **kw)
        alone = torch.cat([run(fn, [s], **kw) for s in seeds])
        torch.testing.assert_close(together, alone, rtol=0, atol=1e-12)


def test_samplers_respect_the_denoiser_range_and_round_sigma():
    class Snapping(AnalyticDenoiser):
        sigma_min, sigma_max = 0.01, 20.0
        seen = []

        def round_sigma(self, sigma):
            sigma = torch.as_tensor(sigma)
            return torch.where(sigma > 0.1, torch.round(sigma * 8) / 8, sigma)

        def forward(self, x, sigma, class_labels=None, **cond):
            self.seen.append(float(sigma))
            return super().forward(x, sigma)

    D = Snapping(GaussianMixture(torch.zeros(1, 2), torch.eye(2)[None]))
    S.edm_sampler(D, latents(2, 2), num_steps=6)
    assert max(D.seen) == 20.0 and min(D.seen) == pytest.approx(0.01)
    assert all(s * 8 == round(s * 8) for s in D.seen if s > 0.1)
