"""Discrete Gaussian diffusion (DDPM / iDDPM / ADM): schedules, respacing, learned variances, the hybrid
loss, ancestral and DDIM sampling with classifier guidance, and the EDM bridges."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from genzoo.diffusion.discrete import (
    DiscreteDiffusion,
    beta_schedule,
    discretized_gaussian_log_likelihood,
    normal_kl,
    respaced_betas,
    space_timesteps,
)
from genzoo.diffusion.discrete_denoiser import DiscreteClassifier, DiscreteDenoiser, classifier_cond_fn
from genzoo.diffusion.precond import iddpm_sigmas
from genzoo.errors import UserError


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def linear_beta(i, T=1000):
    """β_i of the linear schedule, written out: from 1e-4 to 0.02 in T equal steps (scaled by 1000/T)."""
    s = 1000 / T
    return s * 1e-4 + i * (s * 0.02 - s * 1e-4) / (T - 1)


# ----------------------------------------------------------------------------- schedules and respacing


def test_linear_and_cosine_schedules():
    b = beta_schedule("linear", 1000)
    assert (
        b[0] == pytest.approx(1e-4)
        and b[-1] == pytest.approx(0.02)
        and b[500] == pytest.approx(linear_beta(500))
    )
    b4 = beta_schedule("linear", 4000)
    assert b4[0] == pytest.approx(2.5e-5) and b4[-1] == pytest.approx(5e-3)
    c = beta_schedule("cosine", 1000)

    def f(t):
        return math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2

    # ᾱ_t = f(t+1)/f(0) wherever β is not capped; the last β is capped at 0.999
    assert np.cumprod(1 - c)[499] == pytest.approx(f(500) / f(0), rel=1e-9)
    assert c[-1] == 0.999 and c.max() == 0.999
    with pytest.raises(UserError, match="noise-schedule"):
        beta_schedule("quadratic", 10)


def test_respacing_ddim25_is_the_stride_40_grid():
    steps = space_timesteps(1000, "ddim25")
    assert steps == list(range(0, 1000, 40)) and len(steps) == 25 and steps[-1] == 960


def test_respacing_250_rounds_an_accumulated_stride_of_999_over_249():
    steps = space_timesteps(1000, "250")
    assert len(steps) == 250 and steps[0] == 0 and steps[-1] == 999
    # k·4.01205 stays below k·4 + 0.5 up to k = 41 (164.49 -> 164) and passes it at k = 42 (168.51 -> 169)
    assert steps[:5] == [0, 4, 8, 12, 16] and steps[41] == 164 and steps[42] == 169
    assert steps[125] == 502 and steps[248] == 995  # 125·4.01205 = 501.5060; 248·4.01205 = 994.988


def test_respacing_sections():
    steps = space_timesteps(1000, "10,15,20")
    # sections of 334, 333, 333 steps: strides 333/9 = 37, 332/14 = 23.714, 332/19 = 17.474
    assert steps[:10] == [0, 37, 74, 111, 148, 185, 222, 259, 296, 333]
    assert steps[10:13] == [334, 358, 381] and steps[24] == 666
    assert steps[25:28] == [667, 684, 702] and steps[-1] == 999 and len(steps) == 45
    assert space_timesteps(100, "10,10,10")[:4] == [0, 4, 7, 11]  # sections 34, 33, 33: stride 33/9
    assert space_timesteps(8, "") == list(range(8))
    for bad in ("ddim3000", "1001", "a,b", "0"):
        with pytest.raises(UserError, match="respacing"):
            space_timesteps(1000, bad)


def test_respaced_betas_keep_alpha_bar_on_the_kept_steps():
    betas = beta_schedule("linear", 1000)
    new = respaced_betas(betas, space_timesteps(1000, "ddim25"))
    assert new[0] == pytest.approx(1e-4)
    # β'_1 = 1 − ᾱ_40/ᾱ_0 = 1 − ∏_{i=1..40} (1 − β_i)
    assert new[1] == pytest.approx(1 - math.prod(1 - linear_beta(i) for i in range(1, 41)), rel=1e-12)
    kept = np.cumprod(1 - betas)[space_timesteps(1000, "ddim25")]
    np.testing.assert_allclose(np.cumprod(1 - new), kept, rtol=1e-12)


# ----------------------------------------------------------------------------- likelihood terms


def test_normal_kl_matches_torch_distributions():
    m1, m2 = torch.tensor([0.3, -1.0]), torch.tensor([-0.2, 0.5])
    v1, v2 = torch.tensor([0.5, 2.0]), torch.tensor([1.5, 0.1])
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(m1, v1.sqrt()), torch.distributions.Normal(m2, v2.sqrt())
    )
    torch.testing.assert_close(normal_kl(m1, v1.log(), m2, v2.log()), expected)


def test_discretized_gaussian_log_likelihood_integrates_the_bin():
    x = torch.tensor([-1.0, -0.5, 0.0, 0.3, 1.0])
    mean, scale = torch.tensor(0.1), torch.tensor(0.5)  # within ~2σ, where the tanh form of Φ is accurate
    got = discretized_gaussian_log_likelihood(x, mean.expand(5), scale.log().expand(5))
    a, b = (x.numpy() - 0.1 - 1 / 255) / 0.5, (x.numpy() - 0.1 + 1 / 255) / 0.5
    exact = np.log(norm.cdf(b) - norm.cdf(a))
    exact[0], exact[-1] = np.log(norm.cdf(b[0])), np.log(norm.sf(a[-1]))  # edge bins reach ±∞
    np.testing.assert_allclose(got.numpy(), exact, rtol=2e-3)  # the public tanh approximation of Φ


# ----------------------------------------------------------------------------- learned variances and losses


class FixedOutput(torch.nn.Module):
    """A 'network' whose output is two learnable tensors (ε̂ and v), recording the timesteps it gets."""

    def __init__(self, eps, v=None):
        super().__init__()
        self.eps = torch.nn.Parameter(eps.clone())
        self.v = torch.nn.Parameter(v.clone()) if v is not None else None
        self.seen = []

    def forward(self, x, timesteps, y=None, class_labels=None):
        self.seen.append(timesteps.clone())
        out = self.eps.expand_as(x)
        return torch.cat([out, self.v.expand_as(x)], 1) if self.v is not None else out


def test_learned_variance_interpolates_log_beta_and_log_posterior_variance():
    d = DiscreteDiffusion(beta_schedule("linear", 1000))
    t = torch.tensor([5, 5, 5, 700])
    v = torch.tensor([1.0, -1.0, 0.0, 0.5]).reshape(4, 1, 1, 1)
    logvar = d.model_log_variance(t, v, 4).flatten()
    b = [linear_beta(i) for i in (4, 5)]
    ab5, ab4 = (
        math.prod(1 - linear_beta(i) for i in range(6)),
        math.prod(1 - linear_beta(i) for i in range(5)),
    )
    post5 = b[1] * (1 - ab4) / (1 - ab5)  # β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t)
    assert logvar[0].item() == pytest.approx(math.log(b[1]), rel=1e-5)
    assert logvar[1].item() == pytest.approx(math.log(post5), rel=1e-5)
    assert logvar[2].item() == pytest.approx(0.5 * math.log(b[1]) + 0.5 * math.log(post5), rel=1e-5)
    ab700 = math.prod(1 - linear_beta(i) for i in range(701))
    ab699 = ab700 / (1 - linear_beta(700))
    post700 = linear_beta(700) * (1 - ab699) / (1 - ab700)
    assert logvar[3].item() == pytest.approx(
        0.75 * math.log(linear_beta(700)) + 0.25 * math.log(post700), rel=1e-5
    )


def _posterior(t, x0, xt, T=1000):
    ab = math.prod(1 - linear_beta(i, T) for i in range(t + 1))
    ab_prev = ab / (1 - linear_beta(t, T))
    beta = linear_beta(t, T)
    mean = beta * math.sqrt(ab_prev) / (1 - ab) * x0 + (1 - ab_prev) * math.sqrt(1 - beta) / (1 - ab) * xt
    return mean, beta * (1 - ab_prev) / (1 - ab), ab


def test_hybrid_loss_is_mse_plus_kl_in_bits_with_the_mean_frozen():
    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.rand(2, 3, 4, 4, generator=gen) * 2 - 1, torch.randn(2, 3, 4, 4, generator=gen)
    eps_hat, v = torch.randn(1, 3, 4, 4, generator=gen) * 0.5, torch.rand(1, 3, 4, 4, generator=gen) * 2 - 1
    net = FixedOutput(eps_hat, v)
    d = DiscreteDiffusion(beta_schedule("linear", 1000), loss="hybrid")
    t = torch.tensor([300, 0])
    terms = d.training_losses(net, x0, t, noise)
    # closed form at t = 300: KL between the true posterior and p_θ with the learned variance, in bits
    ab = math.prod(1 - linear_beta(i) for i in range(301))
    xt = math.sqrt(ab) * x0[0].double() + math.sqrt(1 - ab) * noise[0].double()
    mean_q, var_q, _ = _posterior(300, x0[0].double(), xt)
    x0_hat = (xt - math.sqrt(1 - ab) * eps_hat[0].double()) / math.sqrt(ab)
    mean_p, _, _ = _posterior(300, x0_hat, xt)
    frac = (v[0].double() + 1) / 2
    logvar_p = frac * math.log(linear_beta(300)) + (1 - frac) * math.log(var_q)
    kl = 0.5 * (
        -1 + logvar_p - math.log(var_q) + var_q / logvar_p.exp() + (mean_q - mean_p) ** 2 / logvar_p.exp()
    )
    assert terms["vb"][0].item() == pytest.approx(kl.mean().item() / math.log(2), rel=1e-3)
    assert terms["mse"][0].item() == pytest.approx(((noise[0] - eps_hat[0]) ** 2).mean().item(), rel=1e-5)
    torch.testing.assert_close(terms["loss"], terms["mse"] + terms["vb"])
    # t = 0: the decoder's discretised negative log-likelihood (bits), the variance clipped to β̃_1
    ab0 = 1 - linear_beta(0)
    xt0 = math.sqrt(ab0) * x0[1].double() + math.sqrt(1 - ab0) * noise[1].double()
    mean0 = (xt0 - math.sqrt(1 - ab0) * eps_hat[0].double()) / math.sqrt(ab0)  # coef2 is 0 at t = 0
    var1 = _posterior(1, 0.0, 0.0)[1]
    logvar0 = (v[0].double() + 1) / 2 * math.log(linear_beta(0)) + (1 - (v[0].double() + 1) / 2) * math.log(
        var1
    )
    nll = -discretized_gaussian_log_likelihood(x0[1].double(), mean0, 0.5 * logvar0).mean() / math.log(2)
    assert terms["vb"][1].item() == pytest.approx(nll.item(), rel=1e-3)
    # L_vlb trains only the variance: no gradient reaches ε̂ through it
    terms["vb"].sum().backward()
    assert net.eps.grad is None or net.eps.grad.abs().max() == 0
    assert net.v.grad.abs().max() > 0


def test_loss_weights_rescale_with_the_number_of_steps():
    x0, noise = torch.zeros(1, 3, 2, 2), torch.randn(1, 3, 2, 2)
    net = FixedOutput(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2))
    t = torch.tensor([1000])
    base = DiscreteDiffusion(beta_schedule("cosine", 4000)).training_losses(net, x0, t, noise)
    resc = DiscreteDiffusion(beta_schedule("cosine", 4000), rescale_learned_sigmas=True).training_losses(
        net, x0, t, noise
    )
    kl = DiscreteDiffusion(beta_schedule("cosine", 4000), loss="kl").training_losses(net, x0, t, noise)
    assert resc["vb"].item() == pytest.approx(4 * base["vb"].item())  # λ = T/1000 per step
    assert kl["loss"].item() == pytest.approx(4000 * base["vb"].item())  # the whole bound: T·L_t


# ----------------------------------------------------------------------------- sampling


def test_sampler_feeds_the_network_original_and_rescaled_timesteps():
    net = FixedOutput(torch.zeros(1, 3, 2, 2))
    d = DiscreteDiffusion.create(1000, "linear", "ddim25", learn_sigma=False)
    _, nfe = d.sample(net, torch.randn(2, 3, 2, 2), ddim=True)
    assert nfe == 25 and [int(s[0]) for s in net.seen] == list(range(960, -1, -40))
    net.seen.clear()
    d4 = DiscreteDiffusion.create(4000, "cosine", "10", learn_sigma=False, rescale_timesteps=True)
    d4.sample(net, torch.randn(1, 3, 2, 2))
    # steps round(k·3999/9) of 4000, then ×1000/4000
    assert [float(s[0]) for s in net.seen][:2] == [3999 / 4, 3555 / 4]


class GaussianEps(torch.nn.Module):
    """The exact ε-prediction for data x₀ ~ N(0, s²): E[ε | x_t] = √(1−ᾱ) x_t / (ᾱ s² + 1 − ᾱ)."""

    def __init__(self, diffusion, s):
        super().__init__()
        self.ac = torch.zeros(diffusion.original_num_steps, dtype=torch.float64)
        self.ac[diffusion.timestep_map] = diffusion.arrays["alphas_cumprod"]
        self.s = s

    def forward(self, x, timesteps, y=None):
        ab = self.ac[timesteps.long()].float().reshape(-1, 1, 1, 1)
        return (1 - ab).sqrt() * x / (ab * self.s**2 + 1 - ab)


@pytest.mark.parametrize("ddim", [False, True])
def test_samplers_recover_a_gaussian_with_the_exact_denoiser(ddim):
    def std_after(spacing):
        d = DiscreteDiffusion.create(1000, "linear", spacing, learn_sigma=False, sigma_small=True)
        gen = torch.Generator().manual_seed(0)
        x, _ = d.sample(
            GaussianEps(d, 0.5),
            torch.randn(4000, 1, 1, 1, generator=gen),
            ddim=ddim,
            clip_denoised=False,
            randn_like=lambda z: torch.randn(z.shape, generator=gen),
        )
        assert abs(x.mean().item()) < 0.03
        return x.std().item()

    if ddim:  # deterministic and first order: the error shrinks about 5x from 50 to 250 steps
        coarse, fine = abs(std_after("ddim50") - 0.5), abs(std_after("ddim250") - 0.5)
        assert fine < 0.015 and fine < coarse / 2.5
    else:  # ancestral with the small (posterior) variance under-disperses at few steps
        coarse, fine = abs(std_after("100") - 0.5), abs(std_after("1000") - 0.5)
        assert fine < 0.015 and fine < coarse / 3


def test_classifier_guidance_shifts_the_ancestral_mean_and_the_ddim_score():
    d = DiscreteDiffusion(beta_schedule("linear", 1000), variance="learned_range")
    gen = torch.Generator().manual_seed(3)
    net = FixedOutput(
        torch.randn(1, 3, 4, 4, generator=gen) * 0.1, torch.rand(1, 3, 4, 4, generator=gen) - 0.5
    )
    x, noise = torch.randn(2, 3, 4, 4, generator=gen), torch.randn(2, 3, 4, 4, generator=gen)
    g = torch.randn(2, 3, 4, 4, generator=gen)
    t = torch.tensor([400, 400])

    def cond_fn(x_, ts, y):
        return g

    plain = d.ancestral_step(net, x, t, None, noise, clip_denoised=False)
    guided = d.ancestral_step(net, x, t, None, noise, clip_denoised=False, cond_fn=cond_fn)
    torch.testing.assert_close(
        guided["sample"] - plain["sample"], plain["variance"] * g, rtol=1e-4, atol=1e-6
    )
    ab = math.prod(1 - linear_beta(i) for i in range(401))
    ab_prev = ab / (1 - linear_beta(400))
    plain = d.ddim_step(net, x, t, None, noise, clip_denoised=False)
    guided = d.ddim_step(net, x, t, None, noise, clip_denoised=False, cond_fn=cond_fn)
    d_eps = -math.sqrt(1 - ab) * g  # ε' = ε − √(1−ᾱ)·∇log p
    d_x0 = -math.sqrt(1 / ab - 1) * d_eps
    expected = math.sqrt(ab_prev) * d_x0 + math.sqrt(1 - ab_prev) * d_eps
    torch.testing.assert_close(guided["sample"] - plain["sample"], expected.float(), rtol=1e-3, atol=1e-5)


def test_classifier_cond_fn_is_the_scaled_gradient_of_log_softmax():
    w = torch.randn(5, 12, generator=torch.Generator().manual_seed(4))

    def classifier(x, t):
        return x.reshape(len(x), -1) @ w.T

    x, y = torch.randn(2, 3, 2, 2), torch.tensor([1, 4])
    grad = classifier_cond_fn(classifier, 2.5)(x, torch.tensor([7, 7]), y)
    p = torch.softmax(classifier(x, None), -1)
    expected = 2.5 * (w[y] - p @ w).reshape(2, 3, 2, 2)  # ∇ log softmax_y(Wx) = W_y − Σ_k p_k W_k
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(UserError, match="class labels"):
        classifier_cond_fn(classifier, 1.0)(x, torch.tensor([7, 7]), None)


# ----------------------------------------------------------------------------- EDM bridges


def test_discrete_denoiser_grid_is_edms_iddpm_grid_for_the_cosine_schedule():
    d = DiscreteDiffusion.create(1000, "cosine", learn_sigma=True)
    den = DiscreteDenoiser(FixedOutput(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)), d)
    torch.testing.assert_close(den.u.double(), iddpm_sigmas(1000), rtol=1e-4, atol=1e-6)


def test_discrete_denoiser_equals_the_discrete_x0_prediction():
    d = DiscreteDiffusion.create(4000, "linear", learn_sigma=True, rescale_timesteps=True)
    gen = torch.Generator().manual_seed(5)
    net = FixedOutput(torch.randn(1, 3, 2, 2, generator=gen), torch.zeros(1, 3, 2, 2))
    den = DiscreteDenoiser(net, d)
    t = torch.tensor([10, 2500])
    sigma = d.sigmas()[t].float()
    x_t = torch.randn(2, 3, 2, 2, generator=gen)
    x = x_t * (1 + sigma**2).sqrt().reshape(-1, 1, 1, 1)  # EDM form: x = x_t / √ᾱ
    out = den(x, sigma)
    assert [float(v) for v in net.seen[-1]] == [2.5, 625.0]  # c_noise = t·1000/T
    x0 = d.p_mean_variance(net(x_t, d.model_timesteps(t)), x_t, t, clip_denoised=False)["pred_xstart"]
    torch.testing.assert_close(out, x0, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(den.round_sigma(sigma * 1.0001), sigma)


def test_discrete_classifier_takes_edm_inputs():
    d = DiscreteDiffusion.create(1000, "linear")
    seen = {}

    def classifier(x_t, t):
        seen["x"], seen["t"] = x_t, t
        return x_t.sum(dim=(1, 2, 3))[:, None]

    wrapped = DiscreteClassifier(classifier, d)
    sigma = d.sigmas()[torch.tensor([3, 900])].float()
    x = torch.randn(2, 3, 2, 2)
    wrapped(x, sigma)
    assert seen["t"].tolist() == [3, 900]
    torch.testing.assert_close(seen["x"], x / (1 + sigma**2).sqrt().reshape(-1, 1, 1, 1))


def test_classifier_scale_flag_then_the_checkpoints_readme_value():
    from genzoo.checkpoints.record import describe
    from genzoo.diffusion.adm import classifier_scale

    converted = torch.nn.Identity()  # a converted model with 256x256_diffusion_uncond's README value
    describe(converted, {"family": "diffusion", "classifier_scale": 10.0}, "model")
    assert classifier_scale({"classifier_scale": 2.0}, converted) == 2.0
    assert classifier_scale({"classifier_scale": None}, converted) == 10.0
    assert classifier_scale({}, torch.nn.Identity()) == 1.0
