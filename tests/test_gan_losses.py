"""GAN losses, regularisers, DiffAugment and latents (genzoo.gan)."""

import math

import pytest
import torch

from genzoo.errors import UserError
from genzoo.gan import augment, latents, losses
from genzoo.seeds import StackedRandomGenerator
from genzoo.train import adversarial


def test_hinge_and_ns_losses_match_closed_forms():
    real = torch.tensor([2.0, 0.5, -1.0], dtype=torch.float64)  # float64: closed forms to 1e-12
    fake = torch.tensor([-2.0, 0.0, 1.5], dtype=torch.float64)
    # hinge D: mean(relu(1 - real)) + mean(relu(1 + fake)) = (0 + .5 + 2)/3 + (0 + 1 + 2.5)/3
    assert adversarial.d_loss("hinge", real, fake).item() == pytest.approx(2.5 / 3 + 3.5 / 3, rel=1e-12)
    assert adversarial.g_loss("hinge", fake).item() == pytest.approx(-(-2.0 + 0.0 + 1.5) / 3, rel=1e-12)
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731
    expect_d = sum(sp(-r) for r in real.tolist()) / 3 + sum(sp(f) for f in fake.tolist()) / 3
    assert adversarial.d_loss("ns", real, fake).item() == pytest.approx(expect_d, rel=1e-12)
    expect_g = sum(sp(-f) for f in fake.tolist()) / 3
    assert adversarial.g_loss("ns", fake).item() == pytest.approx(expect_g, rel=1e-12)
    with pytest.raises(UserError, match="--loss"):
        adversarial.d_loss("wasserstein", real, fake)


def test_r1_penalty_of_a_linear_discriminator_is_the_squared_weight_norm():
    a = torch.randn(3, 4, 4)
    x = torch.randn(5, 3, 4, 4, requires_grad=True)
    logits = (x * a).flatten(1).sum(1)
    assert adversarial.r1_penalty(logits, x).item() == pytest.approx(a.square().sum().item(), rel=1e-5)


def test_orthogonal_regularisation_value_and_gradient_match_autograd_of_the_formula():
    torch.manual_seed(0)
    beta = 1e-2
    conv = torch.randn(6, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    lin = torch.randn(4, 7, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, requires_grad=True)  # 1-D: skipped

    def formula(w):  # β‖WᵀW ⊙ (1 − I)‖²_F with the filters as the columns of W
        W = w.reshape(w.shape[0], -1).t()
        gram = W.t() @ W
        return beta * (gram * (1 - torch.eye(gram.shape[0], dtype=w.dtype))).square().sum()

    ours = losses.orthogonal_regularization([conv, lin, bias], beta)
    expected = formula(conv) + formula(lin)
    assert ours.item() == pytest.approx(expected.item(), rel=1e-12)
    g_ours = torch.autograd.grad(ours, [conv, lin])
    g_ref = torch.autograd.grad(expected, [conv, lin])
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(losses.orthogonal_regularization_grad(lin.detach(), beta), g_ref[1])


def test_orthogonal_rows_have_no_penalty():
    q, _ = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64))  # float64: exact to ~1e-15
    w = (q[:5] * torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)[:, None]).requires_grad_(
        True
    )  # orthogonal, any norms
    assert losses.orthogonal_regularization([w], 1.0).item() == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("psi", [0.04, 0.5, 1.0, 2.0])
def test_truncated_sampler_never_exceeds_psi_and_has_the_truncated_normal_variance(psi):
    rng = StackedRandomGenerator("cpu", range(256))
    z = latents.sample_latents(rng, 128, truncation=psi)
    assert z.shape == (256, 128) and z.dtype == torch.float32
    assert z.abs().max().item() <= psi
    # Var of N(0,1) truncated to ±ψ: 1 − 2ψφ(ψ) / (2Φ(ψ) − 1)
    phi = math.exp(-psi * psi / 2) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + math.erf(psi / math.sqrt(2)))
    var = 1 - 2 * psi * phi / (2 * cdf - 1)
    assert z.var().item() == pytest.approx(var, rel=0.03)
    assert abs(z.mean().item()) < 4 * math.sqrt(var / z.numel())


def test_truncated_latents_depend_on_the_seed_only_and_scaled_style_is_bounded_by_two_psi():
    a = latents.sample_latents(StackedRandomGenerator("cpu", [3, 4, 5]), 16, truncation=0.7)
    b = latents.sample_latents(StackedRandomGenerator("cpu", [5]), 16, truncation=0.7)
    torch.testing.assert_close(a[2], b[0])
    s = latents.sample_latents(StackedRandomGenerator("cpu", range(64)), 64, truncation=0.3, style="scaled")
    assert s.abs().max().item() <= 0.6 + 1e-6 and s.abs().max().item() > 0.5
    with pytest.raises(UserError, match="--truncation"):
        latents.sample_latents(StackedRandomGenerator("cpu", [0]), 4, truncation=-1.0)


def test_interpolation_helpers():
    a, b = torch.randn(32), torch.randn(32)
    path = latents.slerp(a, b, 5)
    torch.testing.assert_close(path[0], a)
    torch.testing.assert_close(path[-1], b)
    # slerp between equal-norm latents keeps the norm; lerp shrinks it midway
    b = b * a.norm() / b.norm()
    mid = latents.slerp(a, b, 3)[1]
    assert mid.norm().item() == pytest.approx(a.norm().item(), rel=1e-5)
    assert latents.lerp(a, b, 3)[1].norm() < a.norm()
    soft = latents.class_interpolation(1, 3, 4, 5)
    torch.testing.assert_close(soft[2], torch.tensor([0.0, 0.5, 0.0, 0.5]))
    with pytest.raises(UserError, match="class_b"):
        latents.class_interpolation(0, 4, 4, 2)


def test_diffaugment_keeps_shapes_passes_gradients_and_cuts_out_a_square():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 16, 16, requires_grad=True)
    y = augment.diff_augment(x, "color,translation,cutout")
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    ones = torch.ones(64, 3, 16, 16)
    cut = augment.cutout(ones)
    zero_frac = (cut == 0).float().mean().item()
    assert 0.1 < zero_frac <= 0.25  # an 8x8 square, clipped at the borders
    shifted = augment.translation(ones)
    assert ((shifted == 0) | (shifted == 1)).all()
    with pytest.raises(UserError, match="--diffaugment"):
        augment.parse_policy("color,flip")
