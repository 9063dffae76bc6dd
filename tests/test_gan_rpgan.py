"""R3GAN's relativistic pairing loss and R2 penalty (closed forms), and --loss rpgan through the objective."""

import math

import pytest
import torch

from genzoo.errors import UserError
from genzoo.train.adversarial import d_loss, g_loss, r2_penalty, rpgan_d_loss, rpgan_g_loss

EPS64 = torch.finfo(torch.float64).eps


def test_rpgan_losses_on_constructed_logits_match_the_closed_form():
    real = torch.tensor([2.0, -1.0, 0.5, 30.0], dtype=torch.float64)
    fake = torch.tensor([1.0, 1.0, 0.5, -30.0], dtype=torch.float64)
    softplus = [math.log1p(math.exp(v)) for v in (-1.0, 2.0, 0.0, -60.0)]
    assert math.isclose(float(rpgan_d_loss(real, fake)), sum(softplus) / 4, rel_tol=16 * EPS64)
    mirrored = [math.log1p(math.exp(-v)) for v in (-1.0, 2.0, 0.0)] + [60.0 + math.log1p(math.exp(-60.0))]
    assert math.isclose(float(rpgan_g_loss(fake, real)), sum(mirrored) / 4, rel_tol=16 * EPS64)
    # pairing, not batch means: swapping the fakes' order changes the loss
    assert float(rpgan_d_loss(real, fake.flip(0))) != pytest.approx(float(rpgan_d_loss(real, fake)))
    assert float(d_loss("rpgan", real, fake)) == float(rpgan_d_loss(real, fake))
    assert float(g_loss("rpgan", fake, real)) == float(rpgan_g_loss(fake, real))
    with pytest.raises(ValueError, match="real images"):
        g_loss("rpgan", fake)
    with pytest.raises(UserError, match="--loss"):
        d_loss("wgan", real, fake)


def test_r2_penalty_of_a_quadratic_discriminator():
    """D(x) = ½‖A x‖² has ∇D = AᵀA x, so the penalty is the batch mean of ‖AᵀA x‖²."""
    g = torch.Generator().manual_seed(0)
    A = torch.randn(5, 6, generator=g, dtype=torch.float64)
    fake = torch.randn(4, 6, generator=g, dtype=torch.float64).requires_grad_(True)
    logits = 0.5 * (fake @ A.T).square().sum(1)
    expected = (fake.detach() @ A.T @ A).square().sum(1).mean()
    torch.testing.assert_close(r2_penalty(logits, fake), expected, rtol=64 * EPS64, atol=0)


def test_rpgan_objective_adds_r1_and_r2_and_trains_g_against_paired_reals():
    from genzoo import nets
    from genzoo.gan.objective import GANObjective
    from genzoo.train.objective import Batch

    torch.manual_seed(0)
    G = nets.build("biggan", resolution=16, ch=4, z_dim=16, shared_dim=8, num_classes=2, attn_res=[])
    D = nets.build("biggan-d", resolution=16, ch=4, num_classes=2, attn_res=[])
    objective = GANObjective(G, D, num_classes=2, loss="rpgan", r1_gamma=1.0, r2_gamma=2.0)
    batch = Batch(images=torch.rand(4, 3, 16, 16) * 2 - 1, labels=torch.tensor([0, 1, 0, 1]))
    d = objective.loss("D", batch, 0)
    assert {"D/r1", "D/r2"} <= set(d.logs) and d.logs["D/r2"] > 0
    d.loss.backward()
    assert all(p.grad is not None for p in D.parameters() if p.requires_grad)
    D.zero_grad(set_to_none=True)
    result = objective.loss("G", batch, 0)
    result.loss.backward()
    assert all(p.grad is None for p in D.parameters())  # D frozen in G's step, reals under no_grad
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in G.parameters())
