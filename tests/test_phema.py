"""Post-hoc EMA (EDM2): the power-function formulas against closed forms, reconstruction against
directly tracked EMAs, the engine's snapshots and their exact resume, and ``genzoo phema``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_train_toy import ToyDataset, register, toy_config

from genzoo.cli import main
from genzoo.errors import UserError
from genzoo.train.engine import train
from genzoo.train.phema import (
    PowerFunctionEMA,
    exp_to_std,
    list_snapshots,
    power_function_beta,
    power_function_correlation,
    reconstruct,
    solve_posthoc_coefficients,
    std_to_exp,
)

EPS = np.finfo(np.float64).eps


@pytest.fixture()
def toy_family(monkeypatch):
    register(monkeypatch)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_std_and_exponent_closed_forms():
    # γ = 1: σ_rel² = 2 / (3²·4) = 1/18; γ = 2: 3 / (4²·5) = 3/80 (EDM2 eq. 123)
    for exp, std in ((1.0, math.sqrt(1 / 18)), (2.0, math.sqrt(3 / 80))):
        assert exp_to_std(exp) == pytest.approx(std, rel=8 * EPS)
        assert std_to_exp(std) == pytest.approx(exp, rel=1e-10)
    stds = np.array([0.02, 0.05, 0.1, 0.2])
    assert np.allclose(exp_to_std(std_to_exp(stds)), stds, rtol=1e-12, atol=0)
    # EDM2's two tracked profiles: γ ≈ 16.97 and 6.94 (paper, Sec. 3.1)
    assert std_to_exp(0.05) == pytest.approx(16.97, abs=0.005)
    assert std_to_exp(0.10) == pytest.approx(6.94, abs=0.005)
    with pytest.raises(ValueError):
        std_to_exp(0.3)


def test_power_function_beta_closed_form():
    std = math.sqrt(1 / 18)  # γ = 1: β(t) = (1 − 1/t)²
    for t in (1, 2, 10, 1000):
        assert power_function_beta(std, t) == pytest.approx((1 - 1 / t) ** 2, abs=1e-12)
    # the same in images: t = images after the update, Δt = batch
    assert power_function_beta(std, 640, 64) == pytest.approx(0.81, abs=1e-12)
    assert power_function_beta(0.1, 1) == 0.0  # the first update copies the weights


def test_correlation_closed_form():
    # γ_a = γ_b = 1, t_a = 1, t_b = 2: ∫_0^1 2τ · 2τ/4 dτ = 1/3; symmetric in its arguments
    std = math.sqrt(1 / 18)
    assert power_function_correlation(1.0, std, 2.0, std) == pytest.approx(1 / 3, rel=1e-10)
    assert power_function_correlation(2.0, std, 1.0, std) == pytest.approx(1 / 3, rel=1e-10)
    # ‖p‖² = (γ+1)² / ((2γ+1) t)
    assert power_function_correlation(3.0, std, 3.0, std) == pytest.approx(4 / 9, rel=1e-10)


def _tracked(trajectory: np.ndarray, stds, every: int):
    """Direct power-function EMAs of a trajectory (float64), with snapshots every ``every`` steps."""
    emas = {s: np.zeros(trajectory.shape[1]) for s in stds}
    snaps = []
    for t, theta in enumerate(trajectory, start=1):
        for s in stds:
            beta = power_function_beta(s, t)
            emas[s] = beta * emas[s] + (1 - beta) * theta
        if t % every == 0:
            snaps += [(t, s, emas[s].copy()) for s in stds]
    return emas, snaps


def test_reconstruction_reproduces_tracked_emas():
    rng = np.random.default_rng(0)
    trajectory = np.cumsum(rng.normal(size=(600, 6)), axis=0)
    stored, other = (0.05, 0.10), 0.07
    direct, _ = _tracked(trajectory, (*stored, other), every=600)
    _, snaps = _tracked(trajectory, stored, every=50)
    ofs, stds, values = ([s[i] for s in snaps] for i in range(3))
    coeffs = solve_posthoc_coefficients(ofs, stds, 600, [*stored, other])
    assert np.allclose(coeffs.sum(axis=0), 1, atol=1e-12)
    recon = np.asarray(values).T @ coeffs  # [dim, out]
    scale = np.abs(trajectory).max()
    # a stored length at the last snapshot: reproduced to 1e-6 of the trajectory's scale
    for j, std in enumerate(stored):
        assert np.abs(recon[:, j] - direct[std]).max() <= 1e-6 * scale
    # another length: the error is bounded by the L2 residual of the profiles (Cauchy–Schwarz), since the
    # tracked EMA of a step-wise constant trajectory is exactly the continuous profile's average
    x = coeffs[:, 2]
    gram = power_function_correlation(np.c_[ofs], np.c_[stds], np.r_[ofs][None], np.r_[stds][None])
    cross = power_function_correlation(np.r_[ofs], np.r_[stds], 600, other)
    residual2 = power_function_correlation(600, other, 600, other) - 2 * x @ cross + x @ gram @ x
    bound = math.sqrt(max(residual2, 0)) * np.sqrt((trajectory ** 2).sum(axis=0))
    error = np.abs(recon[:, 2] - direct[other])
    assert np.all(error <= bound * (1 + 1e-6) + 1e-9 * scale)
    assert error.max() < 1e-3 * scale  # and the bound is small: 12 snapshots per profile suffice


def test_engine_snapshots_reconstruct_and_resume_exactly(tmp_path, toy_family):
    data = ToyDataset(count=12)
    common = dict(phema_stds="0.05,0.1", checkpoint_every=2)
    straight = train(toy_config(tmp_path / "a", steps=6, **common), dataset=data)
    half = train(toy_config(tmp_path / "b", steps=4, **common), dataset=data)
    train(toy_config(tmp_path / "b", steps=6, resume=True, **common), dataset=data)
    names = sorted(p.name for p in (straight / "phema").iterdir())
    expected = [f"snapshot-{s:06d}-std{d}.safetensors" for s in (2, 4, 6) for d in ("0.050", "0.100")]
    assert names == sorted(expected)
    assert names == sorted(p.name for p in (half / "phema").iterdir())
    for name in names:
        a, b = load_file(str(straight / "phema" / name)), load_file(str(half / "phema" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the stored snapshots are the tracked averages; reconstructing a stored length returns it
    tracked = load_file(str(straight / "checkpoint-000006" / "phema.safetensors"))
    (recon,), info = reconstruct(straight, [0.05])
    assert info["images"] == 48 and info["snapshots"] == 6
    for key, value in recon.items():
        assert torch.allclose(value, tracked[f"averages.p0.{key}"], rtol=0, atol=1e-6), key
    snaps = list_snapshots(straight)
    assert [(s.step, s.images) for s in snaps[::2]] == [(2, 16), (4, 32), (6, 48)]
    # every 0.024 kimg besides the checkpoints: after steps 3 and 6 (24 and 48 images) as well
    kimg = train(toy_config(tmp_path / "k", steps=6, checkpoint_every=4, phema_stds="0.05",
                            phema_snapshot_kimg=0.024), dataset=data)
    assert sorted(p.name[9:15] for p in (kimg / "phema").iterdir()) == ["000003", "000004", "000006"]
    with pytest.raises(UserError, match="--phema-snapshot-kimg"):
        train(toy_config(tmp_path / "z", phema_snapshot_kimg=0), dataset=data)
    with pytest.raises(UserError, match="--phema-stds"):
        train(toy_config(tmp_path / "z", phema_stds="0.05,0.5"), dataset=data)
    # off: no averages, no snapshots
    off = train(toy_config(tmp_path / "c", steps=2, phema_stds=""), dataset=data)
    assert not (off / "phema").exists()
    assert not (off / "checkpoint-000002" / "phema.safetensors").exists()


def test_tracking_class_matches_the_formula():
    net = torch.nn.Linear(2, 1).double()
    tracker = PowerFunctionEMA({"net": net}, [0.1])
    values = []
    for t in range(1, 6):
        with torch.no_grad():
            net.weight.fill_(float(t))
        tracker.update({"net": net}, t * 4, 4)
        values.append(t)
    beta = [power_function_beta(0.1, t) for t in range(1, 6)]
    expected = 0.0
    for b, v in zip(beta, values):
        expected = b * expected + (1 - b) * v
    assert tracker.averages["p0"]["net"].weight[0, 0].item() == pytest.approx(expected, abs=1e-12)


def test_phema_cli_writes_loadable_models_and_rejects_bad_input(tmp_path, toy_family, capsys):
    from genzoo.api import load, record_of

    run = train(toy_config(tmp_path / "run", steps=4), dataset=ToyDataset(count=12))
    assert main(["phema", str(run), "--std", "0.13", "--out", str(tmp_path / "m")]) == 0
    model = load(tmp_path / "m")
    assert record_of(model).config["posthoc_ema"]["std"] == 0.13
    assert main(["phema", str(run), "--sweep", "0.02:0.2:4", "--out", str(tmp_path / "sweep")]) == 0
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == [
        "std-0.020", "std-0.080", "std-0.140", "std-0.200"]
    # the sweep's first model is the reconstruction of its std
    (recon,), _ = reconstruct(run, [0.02])
    again = load_file(str(tmp_path / "sweep" / "std-0.020" / "model.safetensors"))
    assert all(torch.equal(recon[k], again[k]) for k in recon)
    capsys.readouterr()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    bad = [
        ([str(run), "--out", str(tmp_path / "x")], "exactly one of --std"),
        ([str(run), "--std", "0.1", "--sweep", "0.02:0.2:3", "--out", str(tmp_path / "x")], "exactly one"),
        ([str(run), "--sweep", "0.2:0.02:3", "--out", str(tmp_path / "x")], "--sweep"),
        ([str(run), "--sweep", "a:b", "--out", str(tmp_path / "x")], "LO:HI:N"),
        ([str(run), "--std", "0.5", "--out", str(tmp_path / "x")], "--std 0.5"),
        ([str(run), "--std", "0.1", "--out", str(tmp_path / "other")], "not a post-hoc EMA model"),
        ([str(tmp_path / "missing"), "--std", "0.1", "--out", str(tmp_path / "x")], "no such run"),
        ([str(tmp_path / "other"), "--std", "0.1", "--out", str(tmp_path / "x")], "no post-hoc EMA"),
    ]
    for argv, message in bad:
        assert main(["phema", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert (tmp_path / "other" / "keep.txt").exists()
    with pytest.raises(UserError, match="no snapshot at or before"):
        reconstruct(run, [0.1], images=1)
