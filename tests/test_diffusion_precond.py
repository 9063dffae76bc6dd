"""Preconditionings against EDM Table 1, written out independently here in numpy."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from genzoo.diffusion.precond import IDDPMDenoiser, build_denoiser, iddpm_sigmas
from genzoo.errors import UserError


class Recorder(nn.Module):
    """A network that remembers its inputs and returns a fixed function of them."""

    in_channels, out_channels, label_dim, resolution = 3, 3, 0, 4

    def __init__(self, out_channels=3):
        super().__init__()
        self.out_channels = out_channels
        self.seen = None

    def forward(self, x, noise_labels, class_labels=None, **cond):
        self.seen = (x.clone(), noise_labels.clone())
        out = torch.sin(3 * x) + noise_labels.reshape(-1, 1, 1, 1)
        return torch.cat([out, 100 + out], 1)[:, :self.out_channels]


def vp_sigma_np(t, beta_d=19.9, beta_min=0.1):
    return np.sqrt(np.exp(0.5 * beta_d * t ** 2 + beta_min * t) - 1)


def vp_table(s):
    # c_noise = (M−1)·t(σ) with t the inverse of σ(t): solve ½β_d t² + β_min t = ln(σ²+1).
    t = (-0.1 + np.sqrt(0.1 ** 2 + 2 * 19.9 * np.log(s ** 2 + 1))) / 19.9
    return 1.0, -s, 1 / np.sqrt(s ** 2 + 1), 999 * t


def ve_table(s):
    return 1.0, s, 1.0, np.log(0.5 * s)


def edm_table(s, sd=0.5):
    norm = np.sqrt(s ** 2 + sd ** 2)
    return sd ** 2 / norm ** 2, s * sd / norm, 1 / norm, np.log(s) / 4


@pytest.mark.parametrize("name,table", [("vp", vp_table), ("ve", ve_table), ("edm", edm_table)])
def test_continuous_preconditionings_match_table_1(name, table):
    net = Recorder()
    D = build_denoiser(name, net)
    x = torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.01, 0.5, 3.0, 60.0])
    out = D(x, sigma)
    for i, s in enumerate(sigma.double().numpy()):
        c_skip, c_out, c_in, c_noise = table(s)
        xin = x[i].double().numpy() * c_in
        np.testing.assert_allclose(net.seen[0][i].numpy(), xin, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(net.seen[1][i].item(), c_noise, rtol=1e-4, atol=1e-4)
        F = np.sin(3 * net.seen[0][i].double().numpy()) + net.seen[1][i].item()
        expected = c_skip * x[i].double().numpy() + c_out * F
        np.testing.assert_allclose(out[i].numpy(), expected, rtol=1e-4, atol=1e-4)


def test_sigma_ranges():
    vp = build_denoiser("vp", Recorder())
    assert vp.sigma_min == pytest.approx(vp_sigma_np(1e-5), rel=1e-6)
    assert vp.sigma_max == pytest.approx(vp_sigma_np(1.0), rel=1e-6)
    assert 152 < vp.sigma_max < 153
    ve = build_denoiser("ve", Recorder())
    assert (ve.sigma_min, ve.sigma_max) == (0.02, 100.0)
    edm = build_denoiser("edm", Recorder())
    assert (edm.sigma_min, edm.sigma_max, edm.sigma_data) == (0.0, math.inf, 0.5)


def test_scalar_sigma_broadcasts_to_batch():
    net = Recorder()
    D = build_denoiser("edm", net)
    x = torch.randn(3, 3, 4, 4)
    a = D(x, 1.5)
    b = D(x, torch.full((3,), 1.5))
    assert torch.equal(a, b) and net.seen[1].shape == (3,)


def alpha_bar(j, M=1000, C_2=0.008):
    return np.sin(0.5 * np.pi * j / M / (C_2 + 1)) ** 2


def test_iddpm_grid_closed_form():
    u = iddpm_sigmas().numpy()
    M = 1000
    assert u.shape == (M + 1,) and u[M] == 0 and np.all(np.diff(u) < 0)
    # Without the C₁ clip the recursion telescopes: u_j² + 1 = ᾱ(M)/ᾱ(j).
    j = np.arange(2, M + 1)
    clipped = alpha_bar(j - 1) / alpha_bar(j) < 0.001
    assert not clipped.any()
    closed = np.sqrt(alpha_bar(M) / alpha_bar(np.arange(1, M + 1)) - 1)
    np.testing.assert_allclose(u[1:], closed, rtol=1e-9, atol=1e-12)
    # j = 1: ᾱ(0) = 0, so the ratio is clipped to C₁.
    assert u[0] == pytest.approx(np.sqrt((u[1] ** 2 + 1) / 0.001 - 1), rel=1e-12)
    assert 2e4 < u[0] < 2.1e4  # β capped at 0.999 on the noisiest step


def test_iddpm_round_sigma_c_noise_and_learned_sigma_channels():
    net = Recorder(out_channels=6)
    D = IDDPMDenoiser(net)
    u = iddpm_sigmas().float()
    assert D.sigma_min == pytest.approx(float(u[999])) and D.sigma_max == pytest.approx(float(u[0]))
    sigma = torch.tensor([u[10] * 1.001, u[500] * 0.999, u[998], 0.5])
    j_expected = torch.tensor([10, 500, 998, int((u - 0.5).abs().argmin())])
    assert torch.equal(D.round_sigma(sigma), u[j_expected])
    assert D.round_sigma(torch.tensor(3.0, dtype=torch.float64)).dtype == torch.float64
    x = torch.randn(4, 3, 4, 4)
    out = D(x, sigma)
    assert torch.equal(net.seen[1], (999 - j_expected).float())
    # Only the first 3 of the 6 output channels are used (the others are 100 + F).
    s = sigma.reshape(-1, 1, 1, 1)
    F = torch.sin(3 * net.seen[0]) + net.seen[1].reshape(-1, 1, 1, 1)
    torch.testing.assert_close(out, x - s * F, rtol=1e-5, atol=1e-4)


def test_unknown_preconditioning_is_a_user_error():
    with pytest.raises(UserError, match="--precond"):
        build_denoiser("vpp", Recorder())
