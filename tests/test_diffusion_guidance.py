"""Guidance and the analytic mixture: exact identities of the ideal denoiser."""

import pytest
import torch

from genzoo.diffusion import samplers as S
from genzoo.diffusion.analytic import AnalyticDenoiser, GaussianMixture, random_mixture
from genzoo.diffusion.guidance import ClassifierFreeGuidance, ClassifierGuidance


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def mixture():
    return random_mixture(dim=3, components=6, num_classes=3, seed=4)


class Unconditional(AnalyticDenoiser):
    def forward(self, x, sigma, class_labels=None, **cond):
        return super().forward(x, sigma)


def points(n=32, d=3, scale=1.0, seed=0):
    return torch.randn(n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * scale


def test_cfg_scale_one_is_the_conditional_denoiser(mixture):
    D = AnalyticDenoiser(mixture)
    x, y = points(), torch.arange(32) % 3
    torch.testing.assert_close(ClassifierFreeGuidance(D, 1.0)(x, 0.7, y), D(x, 0.7, y))


def test_cfg_extrapolates_from_the_null_label(mixture):
    D = AnalyticDenoiser(mixture)
    x, y = points(), torch.arange(32) % 3
    sigma = torch.linspace(0.1, 3, 32, dtype=torch.float64)
    guided = ClassifierFreeGuidance(D, 2.5)(x, sigma, y)
    cond, uncond = D(x, sigma, y), D(x, sigma, torch.full_like(y, 3))
    torch.testing.assert_close(guided, uncond + 2.5 * (cond - uncond))
    torch.testing.assert_close(uncond, D(x, sigma))  # the null label is the unconditional model


def test_classifier_guidance_with_the_exact_classifier_gives_the_conditional_denoiser(mixture):
    """Bayes: ∇log p(x|y) = ∇log p(x) + ∇log p(y|x), so D(x) + σ²∇log p(y|x, σ) = D(x | y)."""
    D = AnalyticDenoiser(mixture)
    uncond = Unconditional(mixture)
    x, y = points(scale=1.5), torch.arange(32) % 3
    for sigma in (0.3, 1.0, torch.linspace(0.2, 2, 32, dtype=torch.float64)):
        guided = ClassifierGuidance(uncond, mixture.class_logits, 1.0)(x, sigma, y)
        torch.testing.assert_close(guided, D(x, sigma, y), rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(ClassifierGuidance(uncond, mixture.class_logits, 0.0)(x, 0.5, y), D(x, 0.5))


def test_ideal_denoiser_is_tweedie(mixture):
    """E[x0|x] = x + σ²∇log p_σ(x) (checked with autograd on the closed-form density)."""
    x = points(16).requires_grad_(True)
    sigma = 0.8
    grad = torch.autograd.grad(mixture.log_prob(x, sigma).sum(), x)[0]
    torch.testing.assert_close(mixture.denoise(x.detach(), sigma), x.detach() + sigma ** 2 * grad)


def test_single_gaussian_denoiser_closed_form():
    cov = torch.tensor([[0.5, 0.2], [0.2, 0.3]], dtype=torch.float64)
    mu = torch.tensor([1.0, -2.0], dtype=torch.float64)
    g = GaussianMixture(mu[None], cov[None])
    x = points(8, 2)
    expected = mu + (x - mu) @ torch.linalg.solve(cov + 0.49 * torch.eye(2, dtype=torch.float64), cov)
    torch.testing.assert_close(g.denoise(x, 0.7), expected)


def test_mixture_sampling_moments_and_class_conditioning(mixture):
    x, comp = mixture.sample(40_000, torch.Generator().manual_seed(0))
    assert (x.mean(0) - mixture.mean()).abs().max() < 0.03
    assert (x.T.cov() - mixture.covariance()).abs().max() < 0.05
    assert mixture.sigma_data == pytest.approx(mixture.covariance().diagonal().mean().sqrt().item())
    _, comp1 = mixture.sample(1000, torch.Generator().manual_seed(1), class_labels=torch.full((1000,), 1))
    assert (mixture.classes[comp1] == 1).all()


def test_class_logits_are_a_posterior(mixture):
    x = points(16)
    logits = mixture.class_logits(x, 0.5)
    torch.testing.assert_close(logits.exp().sum(1), torch.ones(16, dtype=torch.float64))
    # p(y|x) ∝ p(y) p(x|y)
    log_py = torch.stack([mixture.weights[mixture.classes == c].sum() for c in range(3)]).log()
    log_joint = torch.stack([mixture.log_prob(x, 0.5, torch.full((16,), c)) for c in range(3)], 1) + log_py
    torch.testing.assert_close(logits, log_joint - log_joint.logsumexp(1, keepdim=True))


def test_guided_sampling_concentrates_on_the_class(mixture):
    """Guided samples are as often classified as their class as true class samples are; w = 3 more often."""
    D = AnalyticDenoiser(mixture)
    z = points(512, 3, seed=3)
    y = torch.full((512,), 2)

    def accuracy(x):
        return mixture.class_logits(x, 0.0).argmax(1).eq(2).float().mean().item()

    exact, _ = mixture.sample(20_000, torch.Generator().manual_seed(0), torch.full((20_000,), 2))
    bayes = accuracy(exact)
    uncond = Unconditional(mixture)
    guides = (ClassifierFreeGuidance(D, 1.0), ClassifierGuidance(uncond, mixture.class_logits, 1.0))
    for guide in guides:
        assert accuracy(S.edm_sampler(guide, z, y, num_steps=24)) == pytest.approx(bayes, abs=0.03)
    assert accuracy(S.edm_sampler(ClassifierFreeGuidance(D, 3.0), z, y, num_steps=24)) > bayes + 0.02
    assert accuracy(S.edm_sampler(uncond, z, y, num_steps=24)) < bayes - 0.3


def test_null_label_support_is_read_from_the_network():
    """CFG's unconditional branch needs a null label: an index embedding with a row for it (genzoo-trained
    ADM with null_label, genzoo's UNet), or EDM's one-hot rows (the zero row); released ADM has none."""
    from genzoo.diffusion.family import guided_denoiser
    from genzoo.diffusion.precond import EDMDenoiser
    from genzoo.errors import UserError
    from genzoo.nets.adm import ADMUNet
    from genzoo.nets.edm2 import EDM2UNet
    from genzoo.nets.unet import DDPMppUNet

    adm = dict(image_size=8, num_channels=32, num_res_blocks=1, channel_mult="1", attention_resolutions="",
               num_head_channels=32, class_cond=True, num_classes=3)
    released, trained = EDMDenoiser(ADMUNet(**adm)), EDMDenoiser(ADMUNet(**adm, null_label=True))
    assert not released.takes_null_label and trained.takes_null_label
    assert EDMDenoiser(DDPMppUNet(resolution=8, label_dim=3, model_channels=32, channel_mult=(1,),
                                  num_blocks=1, attn_resolutions=())).takes_null_label
    assert EDMDenoiser(EDM2UNet(img_resolution=8, img_channels=3, label_dim=3, model_channels=8,
                                channel_mult=[1], num_blocks=1, attn_resolutions=[])).takes_null_label
    labels, options = torch.tensor([0, 2]), {"guidance": 2.0}
    with pytest.raises(UserError, match="--guidance: .* null label .*3 classes and no null label"):
        guided_denoiser(released, None, labels, options)
    x = torch.randn(2, 3, 8, 8)
    out = guided_denoiser(trained, None, labels, options)(x, torch.tensor([1.0, 1.0]), labels)
    assert out.shape == x.shape and torch.isfinite(out).all()
