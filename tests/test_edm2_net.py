"""EDM2's magnitude-preserving layers and network: unit magnitude for unit-variance inputs (statistical
tests, tolerances from the sample size), and genzoo's Precond + UNet against the documented structure
(tests/edm2_reference.py) loaded from official-layout snapshot pickles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from genzoo.checkpoints import load_official
from genzoo.errors import UserError
from genzoo.nets.edm2 import EDM2UNet, MPConv, MPFourier, mp_cat, mp_silu, mp_sum, normalize
from tests.edm2_reference import TINY, official_state, precond_record, reference_precond, write_edm2_snapshot
from tests.nvlabs_fakes import EasyDict, FakePersistent, write_snapshot

N = 1 << 18  # samples per magnitude test


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def normal(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def assert_mean_square(y: torch.Tensor, expected: float, samples: int) -> None:
    """mean(y²) within 6 standard errors of ``expected`` (the standard error estimated from y itself)."""
    sq = y.detach().double().square().flatten()
    tol = 6 * float(sq.std()) / math.sqrt(samples)
    assert abs(float(sq.mean()) - expected) < tol, (float(sq.mean()), expected, tol)


# ----------------------------------------------------------------------------- magnitude preservation


def test_mp_silu_has_unit_magnitude():
    density = lambda x: math.exp(-x * x / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    second_moment = integrate.quad(lambda x: (x / (1 + math.exp(-x))) ** 2 * density(x), -40, 40)[0]
    assert abs(math.sqrt(second_moment) - 0.596) < 5e-4  # the paper's constant is E[silu(x)²]^½ rounded
    assert_mean_square(mp_silu(normal(N)), second_moment / 0.596 ** 2, N)
    assert abs(second_moment / 0.596 ** 2 - 1) < 2e-3


@pytest.mark.parametrize("t", [0.3, 0.5, 0.8])
def test_mp_sum_has_unit_magnitude(t):
    a, b = normal(N, seed=1), normal(N, seed=2)
    y = mp_sum(a, b, t)
    torch.testing.assert_close(y, (a * (1 - t) + b * t) / math.sqrt((1 - t) ** 2 + t ** 2))
    assert_mean_square(y, 1.0, N)


@pytest.mark.parametrize("t", [0.5, 0.3])
def test_mp_cat_has_unit_magnitude(t):
    a, b = normal(N // 16, 3, seed=3), normal(N // 16, 13, seed=4)
    y = mp_cat(a, b, dim=1, t=t)
    assert y.shape == (N // 16, 16)
    # balance t: the parts' shares of the total energy are (1−t)² : t²
    share_b = float(y[:, 3:].square().sum() / y.square().sum())
    assert abs(share_b - t ** 2 / ((1 - t) ** 2 + t ** 2)) < 6 * math.sqrt(2 / N)
    assert_mean_square(y, 1.0, N)


@pytest.mark.parametrize("kernel", [[], [1, 1], [3, 3]])
def test_mpconv_has_unit_magnitude_and_forces_weight_normalisation(kernel):
    torch.manual_seed(0)
    conv = MPConv(24, 16, kernel)  # computes in float32, as the official layer
    with torch.no_grad():
        conv.weight.mul_(torch.rand(16, *[1] * (conv.weight.ndim - 1)) * 5)
    stored = conv.weight.detach().clone()
    x = (normal(4096, 24) if not kernel else normal(64, 24, 8, 8)).float()
    conv.eval()
    y = conv(x)
    assert torch.equal(conv.weight, stored)  # eval mode never writes the weight
    if kernel == [3, 3]:
        y = y[:, :, 1:-1, 1:-1]  # zero padding lowers the magnitude at the border
    assert_mean_square(y, 1.0, y.numel() // 16 * 16)
    torch.testing.assert_close(conv(x, gain=3.0), 3 * conv(x))
    conv.train()
    conv(x)
    fan_in = 24 * math.prod(kernel)
    rms = conv.weight.detach().double().flatten(1).square().mean(dim=1).sqrt()
    # forced weight normalisation: each output channel of the stored weight gets RMS r/(eps + r) ≈ 1
    stored_rms = stored.double().flatten(1).square().mean(dim=1).sqrt()
    torch.testing.assert_close(rms, stored_rms / (1e-4 + stored_rms), atol=0, rtol=1e-5)
    torch.testing.assert_close(normalize(stored), conv.weight.detach())
    assert fan_in == conv.weight[0].numel()


def test_mpfourier_formula_and_unit_magnitude():
    torch.manual_seed(0)
    channels = 2048
    fourier = MPFourier(channels)  # float32 arithmetic, as the official layer
    x = normal(N // channels * 8, seed=5)
    y = fourier(x.float()).double()
    freqs, phases = fourier.freqs.double(), fourier.phases.double()
    angle = x.float().double()[:, None] * freqs[None] + phases[None]
    # float32 rounding of the angle: a few ulps of its size, times √2
    tol = 8 * torch.finfo(torch.float32).eps * float(angle.abs().max()) * math.sqrt(2)
    torch.testing.assert_close(y, math.sqrt(2) * torch.cos(angle), atol=tol, rtol=0)
    freqs, phases = freqs.float().double(), phases.float().double()
    # E_x[y_c²] = 1 + cos(2φ_c)·exp(−2 f_c²) for x ~ N(0, 1) (f, φ as stored: 2π-scaled)
    conditional = 1 + torch.cos(2 * phases) * torch.exp(-2 * freqs ** 2)
    expected = float(conditional.mean())
    # over random f ~ 2π·N(0, 1), φ ~ 2π·U[0, 1): sd of cos(2φ)·e^{−2f²} ≤ (½·E[e^{−4f²}])^½ < 0.17
    assert abs(expected - 1) < 6 * 0.17 / math.sqrt(channels)
    assert_mean_square(y, expected, len(x))


# ----------------------------------------------------------------------------- against the documented network


def tiny_snapshot(tmp_path, latent=False, **over):
    cfg = dict(TINY, **over)
    if latent:
        cfg["img_channels"] = 4
    state = official_state(cfg)
    path = write_edm2_snapshot(tmp_path / "edm2-tiny.pkl", cfg, state, latent=latent)
    return cfg, state, path


SIGMAS = torch.tensor([0.002, 0.03, 0.5, 7.0, 80.0])


def assert_matches(out, ref):
    scale = float(ref.abs().max())
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("latent", [False, True])
def test_precond_matches_the_documented_network(tmp_path, latent):
    cfg, state, path = tiny_snapshot(tmp_path, latent=latent)
    model = load_official("edm2", path)
    assert model.encoder.latent is latent and model.label_dim == 5 and model.sigma_data == 0.5
    assert sorted(model.state_dict()) == sorted(state)  # the official key names
    x = normal(5, cfg["img_channels"], 8, 8, seed=7).float() * SIGMAS.reshape(-1, 1, 1, 1).clamp(min=1)
    labels = torch.tensor([0, 4, 2, 1, 3])
    one_hot = torch.eye(5)[labels]
    ref, ref_logvar = reference_precond(state, cfg, x, SIGMAS, one_hot, return_logvar=True)
    with torch.no_grad():
        out, logvar = model(x, SIGMAS, one_hot, return_logvar=True)
        assert_matches(out, ref)
        assert_matches(logvar, ref_logvar)
        assert_matches(model(x, SIGMAS, labels), ref)  # integer labels
        assert_matches(model(x.double(), SIGMAS.double(), labels), ref)  # float64 in, float32 inside
        # no label = the all-zero row, as the official Precond; genzoo's null index is the same
        no_label = reference_precond(state, cfg, x, SIGMAS, None)
        assert_matches(model(x, SIGMAS), no_label)
        assert_matches(model(x, SIGMAS, torch.full((5,), 5)), no_label)
        assert_matches(model(x, SIGMAS, torch.full((5,), -1)), no_label)
        assert (model(x, SIGMAS) - model(x, SIGMAS, labels)).abs().max() > 1e-3  # labels matter


def test_unconditional_and_wider_configurations(tmp_path):
    over = dict(label_dim=0, channel_mult=[1, 2, 2], num_blocks=2, attn_resolutions=[4, 2],
                channel_mult_emb=3, channel_mult_noise=2)
    cfg, state, path = tiny_snapshot(tmp_path, **over)
    model = load_official("edm2", path)
    x = normal(5, 3, 8, 8, seed=8).float()
    with torch.no_grad():
        assert_matches(model(x, SIGMAS), reference_precond(state, cfg, x, SIGMAS))
    assert model.model.emb_label is None and len(model.model.enc) == 1 + 2 + 2 * 3


def test_registered_network_rebuilds_from_config():
    from genzoo import nets

    net = nets.build("edm2", img_resolution=8, img_channels=3, label_dim=0, model_channels=8,
                     channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4], channels_per_head=8)
    assert isinstance(net, EDM2UNet)
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(net(x, torch.zeros(2)), torch.zeros(2, 3, 8, 8))  # out_gain starts at 0


def test_snapshot_whose_code_differs_is_refused(tmp_path):
    cfg = dict(TINY)
    state = official_state(cfg)
    record = precond_record(state, cfg)
    block = record.state["_modules"]["unet"].state["_modules"]["enc"]._modules["4x4_block0"]
    block.state["res_balance"] = 0.4
    path = write_snapshot(tmp_path / "odd.pkl", EasyDict(ema=record))
    with pytest.raises(UserError, match="res_balance is 0.4 in the file, 0.3 in genzoo"):
        load_official("edm2", path)
    record = precond_record(state, cfg)
    record.state["_modules"]["unet"].class_name = "SongUNet"
    with pytest.raises(UserError, match="sub-module unet is SongUNet in the file, EDM2UNet in genzoo"):
        load_official("edm2", write_snapshot(tmp_path / "odd2.pkl", EasyDict(ema=record)))
    record = precond_record(state, cfg)
    record.state["_init_kwargs"]["magic"] = 1
    with pytest.raises(UserError, match="magic"):
        load_official("edm2", write_snapshot(tmp_path / "odd3.pkl", EasyDict(ema=record)))


def test_stored_source_never_runs_and_unknown_encoders_are_refused(tmp_path):
    cfg = dict(TINY)
    state = official_state(cfg)
    marker = tmp_path / "ran.txt"
    record = precond_record(state, cfg)
    record.module_src = f"open({str(marker)!r}, 'w').write('pwned')\n"
    model = load_official("edm2", write_snapshot(tmp_path / "src.pkl", EasyDict(ema=record)))
    assert not marker.exists() and model.encoder.latent is False  # no encoder entry: EDM2's default RGB
    evil = FakePersistent("EvilEncoder", {}, module_src=f"open({str(marker)!r}, 'w')\n")
    with pytest.raises(UserError, match="'encoder' is EvilEncoder, not one of StandardRGBEncoder"):
        load_official("edm2", write_snapshot(tmp_path / "enc.pkl", EasyDict(ema=precond_record(state, cfg),
                                                                            encoder=evil)))
    assert not marker.exists()


def test_presets_check_the_file(tmp_path):
    _, _, path = tiny_snapshot(tmp_path)
    with pytest.raises(UserError, match="resolution 8, the preset expects 64"):
        load_official("edm2", path, preset="edm2-img64-s-fid")
    from genzoo.checkpoints import get_source

    presets = get_source("edm2").presets
    xxl = presets["edm2-img512-xxl-fid"]
    assert (xxl["ema_std"], xxl["published"]) == (0.07, 1.91)
    autog = presets["edm2-img512-xxl-autog-fid"]
    assert (autog["guidance"], autog["guide_file"]) == (2.05, "edm2-img512-m-0268435-0.155.pkl")
    assert presets["edm2-img64-l-fid"]["img_channels"] == 3
    assert presets["edm2-img512-s-fid"]["img_channels"] == 4
    names = {f"edm2-img512-{s}-{m}" for s in ("xs", "s", "m", "l", "xl", "xxl") for m in ("fid", "dino")}
    names |= {f"edm2-img64-{s}-fid" for s in ("s", "m", "l", "xl")}
    assert names <= set(presets)
    assert np.isclose(presets["edm2-img64-xl-fid"]["published"], 1.33)
