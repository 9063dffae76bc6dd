"""Training losses (EDM Table 1), label dropout and the non-leaking augmentation pipe."""

import math

import numpy as np
import pytest
import torch

from genzoo.diffusion.augment import AUGMENT_DIM, AugmentPipe
from genzoo.diffusion.losses import EDMLoss, VELoss, VPLoss, build_loss, drop_labels
from genzoo.diffusion.precond import EDMDenoiser
from genzoo.diffusion.samplers import vp_sigma
from genzoo.errors import UserError
from genzoo.seeds import StackedRandomGenerator


class Zero(torch.nn.Module):
    """A 'denoiser' that predicts 0 and remembers the σ it was given."""

    def forward(self, x, sigma, class_labels=None, **cond):
        self.sigma, self.cond = sigma, cond
        return torch.zeros_like(x)


@pytest.mark.parametrize("loss,weight", [
    (EDMLoss(), lambda s: (s ** 2 + 0.25) / (s * 0.5) ** 2),
    (VPLoss(), lambda s: 1 / s ** 2),
    (VELoss(), lambda s: 1 / s ** 2),
])
def test_loss_is_weighted_squared_error(loss, weight):
    torch.manual_seed(0)
    y = torch.randn(64, 3, 2, 2)
    net = Zero()
    out = loss(net, y)
    sigma = net.sigma.reshape(-1, 1, 1, 1)
    torch.testing.assert_close(out, weight(sigma) * y ** 2)


def test_edm_effective_weight_is_one():
    """λ(σ)·c_out(σ)² = 1: EDM's loss weights every σ equally at the network's output (Sec. 5)."""
    sigma = torch.logspace(-3, 2, 50)
    c_out = EDMDenoiser(torch.nn.Identity()).scalings(sigma)[1]
    torch.testing.assert_close(EDMLoss().weight(sigma) * c_out ** 2, torch.ones(50))


def test_sigma_distributions():
    n = 40_000
    ln_edm = EDMLoss().sample_sigma(n, torch.device("cpu")).log()
    assert ln_edm.mean().item() == pytest.approx(-1.2, abs=0.03)
    assert ln_edm.std().item() == pytest.approx(1.2, abs=0.03)
    ln_ve = VELoss().sample_sigma(n, torch.device("cpu")).log()
    assert ln_ve.min() >= math.log(0.02) - 1e-5 and ln_ve.max() <= math.log(100) + 1e-5
    assert ln_ve.mean().item() == pytest.approx((math.log(0.02) + math.log(100)) / 2, abs=0.05)
    # VP: t = σ⁻¹(σ) is uniform on [ε_t, 1].
    sig = VPLoss().sample_sigma(n, torch.device("cpu")).double()
    t = ((0.1 ** 2 + 2 * 19.9 * (sig ** 2 + 1).log()).sqrt() - 0.1) / 19.9
    assert t.min() >= 1e-5 - 1e-6 and t.max() <= 1 + 1e-6
    assert np.histogram(t.numpy(), bins=4, range=(0, 1))[0] == pytest.approx([n / 4] * 4, rel=0.05)
    assert float(vp_sigma(1.0)) == pytest.approx(float(sig.max()), rel=0.01)


def test_losses_use_per_sample_rng():
    y = torch.randn(6, 3, 2, 2)
    rng_all = StackedRandomGenerator("cpu", range(6))
    together = EDMLoss()(Zero(), y, rng=rng_all)
    alone = torch.cat([EDMLoss()(Zero(), y[i:i + 1], rng=StackedRandomGenerator("cpu", [i]))
                       for i in range(6)])
    torch.testing.assert_close(together, alone)


def test_label_dropout():
    labels = torch.arange(10).repeat(2000)
    dropped = drop_labels(labels, 0.25, null_label=10)
    frac = (dropped == 10).float().mean().item()
    assert frac == pytest.approx(0.25, abs=0.02)
    kept = dropped != 10
    assert torch.equal(dropped[kept], labels[kept])
    assert torch.equal(drop_labels(torch.tensor([-1, 3]), 0.0, 10), torch.tensor([10, 3]))


def test_unknown_loss():
    with pytest.raises(UserError, match="--loss"):
        build_loss("l1")


def test_augment_off_is_identity_with_zero_labels():
    x = torch.randn(8, 3, 8, 8)
    out, labels = AugmentPipe(p=0.0, xflip=0)(x)
    assert torch.equal(out, x) and torch.equal(labels, torch.zeros(8, AUGMENT_DIM))


def test_augment_flips_are_exact_and_labelled():
    x = torch.randn(64, 3, 8, 8)
    pipe = AugmentPipe(p=1.0, xflip=1, yflip=1, scale=0, rotate_frac=0, aniso=0, translate_frac=0)
    out, labels = pipe(x)
    for i in range(64):
        expected = x[i]
        if labels[i, 0]:
            expected = expected.flip(-1)
        if labels[i, 1]:
            expected = expected.flip(-2)
        torch.testing.assert_close(out[i], expected, rtol=0, atol=1e-5)
    assert 10 < labels[:, 0].sum() < 54 and 10 < labels[:, 1].sum() < 54
    assert torch.equal(labels[:, 2:], torch.zeros(64, AUGMENT_DIM - 2))


def test_augment_rotation_label_matches_the_transform():
    # A rotation by θ about the centre preserves a radially symmetric image and rotates a ramp.
    pipe = AugmentPipe(p=1.0, xflip=0, yflip=0, scale=0, rotate_frac=1, aniso=0, translate_frac=0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    ramp = (0.3 * xx).expand(16, 1, 32, 32).contiguous()
    out, labels = pipe(ramp, rng=StackedRandomGenerator("cpu", range(16)))
    theta = torch.atan2(labels[:, 4], labels[:, 3] + 1)
    centre = (xx.abs() < 0.4) & (yy.abs() < 0.4)
    for i in range(16):
        expected = 0.3 * (xx * theta[i].cos() + yy * theta[i].sin())
        alt = 0.3 * (xx * theta[i].cos() - yy * theta[i].sin())
        err = min((out[i, 0] - expected)[centre].abs().max(), (out[i, 0] - alt)[centre].abs().max())
        assert err < 0.03
    assert labels[:, 3:5].abs().sum() > 0


def test_augmented_loss_feeds_labels_to_the_network():
    net = Zero()
    EDMLoss()(net, torch.randn(4, 3, 8, 8), augment_pipe=AugmentPipe(p=1.0))
    assert net.cond["augment_labels"].shape == (4, AUGMENT_DIM)
