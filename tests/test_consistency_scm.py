"""sCM: TrigFlow ↔ EDM conversions (closed form), the JVP tangent against finite differences, tangent
normalisation, the teacher's velocity, and training that lowers the one-step error."""

import math

import torch

from genzoo.consistency.objective import ConsistencyObjective
from genzoo.consistency.trigflow import (
    TrigFlowModel,
    edm_sigma,
    from_edm,
    normalise_tangent,
    scm_tangent,
    teacher_velocity,
    to_edm,
    trigflow_time,
)
from genzoo.train.objective import Batch
from tests.test_consistency_train import MLP

EPS64 = torch.finfo(torch.float64).eps
EPS32 = torch.finfo(torch.float32).eps


def test_trigflow_edm_conversions_closed_form():
    sd = 0.5
    t = torch.linspace(0.01, 1.55, 50, dtype=torch.float64)
    torch.testing.assert_close(edm_sigma(t, sd), sd * torch.sin(t) / torch.cos(t), rtol=8 * EPS64, atol=0)
    torch.testing.assert_close(trigflow_time(edm_sigma(t, sd), sd), t, rtol=16 * EPS64, atol=0)
    assert math.isclose(float(trigflow_time(torch.tensor(0.5, dtype=torch.float64), sd)), math.pi / 4,
                        rel_tol=4 * EPS64)
    # x_t = cos t·x0 + sin t·σ_d·n  ⇔  x_σ = x0 + σ·n with σ = σ_d tan t
    g = torch.Generator().manual_seed(0)
    x0, n = (torch.randn(50, 3, 2, 2, generator=g, dtype=torch.float64) for _ in range(2))
    c, s = torch.cos(t).reshape(-1, 1, 1, 1), torch.sin(t).reshape(-1, 1, 1, 1)
    x_t = c * x0 + s * sd * n
    x_sigma = x0 + edm_sigma(t, sd).reshape(-1, 1, 1, 1) * n
    torch.testing.assert_close(to_edm(x_t, t), x_sigma, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(from_edm(x_sigma, t), x_t, rtol=1e-12, atol=1e-12)


class MLP64(MLP):
    """The test MLP without its float32 cast of the noise label (finite differences need float64)."""

    def forward(self, x, noise_labels, class_labels=None):
        t = noise_labels.reshape(-1, 1) * self.freqs[None]
        return self.body(torch.cat([x.flatten(1), t.sin(), t.cos()], 1)).reshape(x.shape)


def _student(dtype=torch.float64):
    torch.manual_seed(0)
    return TrigFlowModel(MLP64(dim=2, hidden=16)).to(dtype)


def test_trigflow_model_is_edm_preconditioning_in_edm_coordinates():
    student = _student()
    g = torch.Generator().manual_seed(1)
    x_sigma = torch.randn(6, 2, 1, 1, generator=g, dtype=torch.float64) * 3
    sigma = torch.tensor([0.01, 0.1, 0.5, 1.0, 10.0, 80.0], dtype=torch.float64)
    t = trigflow_time(sigma, 0.5)
    expected = student.f(from_edm(x_sigma, t), t)
    got = student(x_sigma, sigma).double()  # the Denoiser wrapper runs in float32
    torch.testing.assert_close(got, expected, rtol=256 * EPS32, atol=256 * EPS32 * 3)
    # boundary: f(x_t, t) → x_t as t → 0
    tiny = torch.full((6,), 1e-9, dtype=torch.float64)
    torch.testing.assert_close(student.f(x_sigma, tiny), x_sigma, rtol=0, atol=1e-6)


def test_jvp_tangent_matches_central_finite_differences():
    student = _student()
    g = torch.Generator().manual_seed(2)
    x_t = torch.randn(4, 2, 1, 1, generator=g, dtype=torch.float64)
    dxt_dt = torch.randn(4, 2, 1, 1, generator=g, dtype=torch.float64)
    t = torch.tensor([0.2, 0.7, 1.0, 1.4], dtype=torch.float64)
    sd = student.sigma_data
    F_minus, tangent = scm_tangent(student, x_t, t, dxt_dt, None, warmup=0.6, normalise=False)
    h = 1e-5

    def F_along(eps):
        return student.F((x_t + eps * dxt_dt) / sd, t + eps)

    with torch.no_grad():
        dF_dt = (F_along(h) - F_along(-h)) / (2 * h)  # error O(h²) ≈ 1e-10
        F0 = F_along(0.0)
    c, s = torch.cos(t).reshape(-1, 1, 1, 1), torch.sin(t).reshape(-1, 1, 1, 1)
    expected = -c ** 2 * (sd * F0 - dxt_dt) - 0.6 * (c * s * x_t + sd * c * s * dF_dt)
    torch.testing.assert_close(F_minus, F0, rtol=0, atol=0)
    torch.testing.assert_close(tangent, expected, rtol=1e-7, atol=1e-8)


class ExactPointMassNet(torch.nn.Module):
    """The network whose TrigFlow model is the exact consistency function of a point mass a:
    F(y, t) = (cos t·σ_d·y − a)/(σ_d sin t), so f(x_t, t) = a for every x_t and t (t read back from
    c_noise = ¼ ln(σ_d tan t))."""

    def __init__(self, point, sigma_data):
        super().__init__()
        self.point, self.sigma_data = point, sigma_data

    def forward(self, y, noise_labels, class_labels=None):
        t = torch.atan((4 * noise_labels).exp() / self.sigma_data).reshape(-1, 1, 1, 1)
        return -(torch.cos(t) * self.sigma_data * y - self.point) / (self.sigma_data * torch.sin(t))


def test_tangent_vanishes_at_the_exact_consistency_function():
    """With the warm-up done, g = cos t·df_θ⁻/dt along the ODE: zero for the exact consistency function of a
    point mass fed its true velocity, at every t (a cos t·sin t factor too many or too few breaks this)."""
    sd = 0.5
    point = torch.tensor([0.3, -0.2], dtype=torch.float64).reshape(1, 2, 1, 1)
    student = TrigFlowModel(ExactPointMassNet(point, sd), sigma_data=sd)
    g = torch.Generator().manual_seed(4)
    t = torch.tensor([0.05, 0.4, 0.8, 1.2, 1.5], dtype=torch.float64)
    c, s = torch.cos(t).reshape(-1, 1, 1, 1), torch.sin(t).reshape(-1, 1, 1, 1)
    x_t = c * point + s * sd * torch.randn(5, 2, 1, 1, generator=g, dtype=torch.float64)
    velocity = teacher_velocity(PointDenoiser(point), x_t, t, sd, None)
    torch.testing.assert_close(student.f(x_t, t), point.expand_as(x_t), rtol=0, atol=1e3 * EPS64)
    _, tangent = scm_tangent(student, x_t, t, velocity, None, warmup=1.0, normalise=False)
    # |F| ≤ ~1/(σ_d sin t) ≈ 40 at t = 0.05: allow round-off of a few hundred ulps of that
    torch.testing.assert_close(tangent, torch.zeros_like(tangent), rtol=0, atol=1e4 * EPS64)


def test_jvp_tangent_runs_in_fp32_under_bf16_autocast():
    """The engine's --precision bf16 wraps the loss in autocast; the JVP leaves it (functorch's dual inputs
    are not cast, and the tangent needs fp32), so it equals the JVP without autocast bit for bit."""
    from genzoo import nets
    from genzoo.consistency.trigflow import TrigFlowModel

    torch.manual_seed(0)
    net = nets.build("ddpmpp", resolution=8, in_channels=3, out_channels=3, label_dim=0, model_channels=8,
                     channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4])
    student = TrigFlowModel(net)
    x_t, dxt_dt = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    t = torch.tensor([0.3, 1.2])
    plain = scm_tangent(student, x_t, t, dxt_dt, None)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = scm_tangent(student, x_t, t, dxt_dt, None)
    for a, b in zip(plain, mixed):
        assert b.dtype == torch.float32 and torch.equal(a, b)


def test_tangent_normalisation():
    g = torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.3, 0.4]], dtype=torch.float64).reshape(3, 2, 1, 1)
    out = normalise_tangent(g, c=0.1)
    torch.testing.assert_close(out.flatten(1).norm(dim=1),
                               torch.tensor([5 / 5.1, 0.0, 0.5 / 0.6], dtype=torch.float64))
    torch.testing.assert_close(out / out.flatten(1).norm(dim=1).clamp_min(1e-30).reshape(-1, 1, 1, 1)
                               * torch.tensor([5, 1, 0.5], dtype=torch.float64).reshape(-1, 1, 1, 1)
                               * torch.tensor([1, 0, 1], dtype=torch.float64).reshape(-1, 1, 1, 1),
                               g * torch.tensor([1, 0, 1], dtype=torch.float64).reshape(-1, 1, 1, 1))


def test_teacher_velocity_of_a_point_mass_is_the_true_velocity():
    point = torch.tensor([0.3, -0.2], dtype=torch.float64).reshape(1, 2, 1, 1)
    teacher = lambda x, sigma, labels: point.expand_as(x)  # noqa: E731  the exact denoiser of a point mass
    g = torch.Generator().manual_seed(3)
    z = 0.5 * torch.randn(5, 2, 1, 1, generator=g, dtype=torch.float64)
    t = torch.linspace(0.1, 1.5, 5, dtype=torch.float64)
    c, s = torch.cos(t).reshape(-1, 1, 1, 1), torch.sin(t).reshape(-1, 1, 1, 1)
    x_t = c * point + s * z
    torch.testing.assert_close(teacher_velocity(teacher, x_t, t, 0.5, None), c * z - s * point,
                               rtol=1e-12, atol=1e-12)


class PointDenoiser(torch.nn.Module):
    """The exact denoiser of a point mass: D(x, σ) = the point."""

    def __init__(self, point):
        super().__init__()
        self.register_buffer("point", point)

    def forward(self, x, sigma, labels=None):
        return self.point.to(x.dtype).expand_as(x)


def _one_step_error(student, point):
    z = torch.randn(256, 2, 1, 1, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        return float((student(z * student.sigma_max, student.sigma_max) - point).square().mean())


def test_scm_training_and_distillation_lower_the_one_step_error():
    point = torch.tensor([0.3, -0.2]).reshape(1, 2, 1, 1)
    batch = Batch(images=point.expand(128, -1, -1, -1), labels=torch.full((128,), -1))
    teacher = PointDenoiser(point)
    for distil in (None, teacher):
        student = _student(torch.float32)
        objective = ConsistencyObjective(student, "scm", distil, total_steps=100, tangent_warmup=20)
        opt = torch.optim.Adam(student.parameters(), lr=3e-3)
        before = _one_step_error(student, point)
        for step in range(100):
            result = objective.loss("net", batch, step)
            opt.zero_grad()
            result.loss.backward()
            opt.step()
        assert torch.isfinite(result.loss) and result.logs["tangent_warmup"] == 1.0
        assert _one_step_error(student, point) < 0.5 * before, (before, _one_step_error(student, point))


def test_scm_distillation_run_round_trips_and_samples_in_one_and_two_steps(tmp_path):
    import json

    from genzoo.api import load, sample
    from genzoo.train.engine import train
    from tests.test_consistency_engine import FLAGS, TEACHER_NET, save_teacher

    save_teacher(tmp_path / "dm")
    train({**FLAGS, "mode": "scm", "teacher": str(tmp_path / "dm"), "out": str(tmp_path / "scm")})
    saved = json.loads((tmp_path / "scm" / "checkpoint-000002" / "config.json").read_text())
    assert (saved["mode"], saved["tangent_warmup"], saved["net"]) == ("scm", 0, TEACHER_NET)
    model = load(tmp_path / "scm")
    assert isinstance(model, TrigFlowModel)
    for steps in (1, 2):
        images, _, nfe = sample(model, "0-1", batch_size=2, steps=steps)
        assert nfe == steps and images.shape == (2, 3, 8, 8)
