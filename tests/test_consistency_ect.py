"""ECT (easy consistency tuning): the Δt curriculum, the weighting, the loss against hand-computed values."""

import math

import pytest
import torch
import torch.nn as nn

from genzoo.consistency import ConsistencyModel
from genzoo.consistency.distances import l2, pseudo_huber
from genzoo.consistency.model import scalings
from genzoo.consistency.objective import ConsistencyObjective, ect_loss, ect_weight, teacher_point
from genzoo.consistency.schedules import ect_r, ect_stage
from genzoo.errors import UserError
from genzoo.train.objective import Batch
from tests.test_consistency_train import MLP

EPS64 = torch.finfo(torch.float64).eps


class Zero(nn.Module):
    """F = 0, so f(x, σ) = c_skip(σ)·x exactly."""

    def __init__(self):
        super().__init__()
        self.resolution, self.in_channels, self.out_channels, self.label_dim = 2, 3, 3, 0
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x, noise_labels, class_labels=None):
        return torch.zeros_like(x) * self.w


def test_ect_r_closed_form_endpoints_and_monotonicity():
    t = torch.logspace(-3, 2, 200, dtype=torch.float64)
    # stage 0: Δt = t·(1 + 8·sigmoid(−t)) ≥ t, so r = 0 everywhere (diffusion training)
    assert torch.equal(ect_r(t, 0), torch.zeros_like(t))
    for s in (1, 2, 5):
        expected = (t - t * 2.0 ** -s * (1 + 8 / (1 + torch.exp(t)))).clamp_min(0)
        torch.testing.assert_close(ect_r(t, s), expected, rtol=8 * EPS64, atol=0)
    # Δt/t shrinks with the stage and tends to 0; r < t always
    previous = torch.full_like(t, 1.0)
    for s in range(1, 30):
        ratio = (t - ect_r(t, s)) / t
        assert (ratio <= previous + 8 * EPS64).all() and (ratio > 0).all()
        previous = ratio
    assert float(previous.max()) < 2.0 ** -28 * 5
    # large t: Δt → t·q^(−s) (the sigmoid term vanishes)
    big = torch.tensor([80.0], dtype=torch.float64)
    assert math.isclose(float(ect_r(big, 3)), 80 * (1 - 2.0 ** -3 * (1 + 8 / (1 + math.exp(80.0)))),
                        rel_tol=1e-15)


def test_ect_stage_splits_the_run_into_equal_stages():
    assert [ect_stage(k, 80, 8) for k in (0, 9, 10, 79, 80, 1000)] == [0, 0, 1, 7, 7, 7]
    with pytest.raises(UserError, match="--ect-stages"):
        ect_stage(0, 10, 0)


def test_ect_weight_is_inverse_step():
    t = torch.tensor([1.0, 2.0, 80.0], dtype=torch.float64)
    r = torch.tensor([0.0, 1.5, 79.0], dtype=torch.float64)
    torch.testing.assert_close(ect_weight(t, r), torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64))


def test_ect_snr_weight_is_snr_plus_inverse_data_variance():
    """``--ect-weighting snr``: (t² + σ_d²)/(t·σ_d)² = 1/t² + 1/σ_d², whatever r is (ECT's ImageNet-64)."""
    t = torch.tensor([0.5, 1.0, 80.0], dtype=torch.float64)
    r = torch.tensor([0.0, 0.9, 40.0], dtype=torch.float64)
    expected = torch.tensor([8.0, 5.0, 4.0 + 1 / 6400], dtype=torch.float64)
    torch.testing.assert_close(ect_weight(t, r, "snr", 0.5), expected, rtol=4 * EPS64, atol=0)
    torch.testing.assert_close(ect_weight(t, r, "snr", 1.0), 1 / t ** 2 + 1, rtol=4 * EPS64, atol=0)


def test_ect_loss_on_a_constructed_batch_equals_the_hand_computed_value():
    student = ConsistencyModel(Zero()).double()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, 2, 2, generator=g, dtype=torch.float64)
    z = torch.randn(3, 3, 2, 2, generator=g, dtype=torch.float64)
    t = torch.tensor([0.5, 2.0, 10.0], dtype=torch.float64)
    r = torch.tensor([0.0, 1.0, 9.0], dtype=torch.float64)  # the first item: target = data
    c_skip_t = scalings(t)[0].reshape(-1, 1, 1, 1)
    c_skip_r = scalings(r[1:])[0].reshape(-1, 1, 1, 1)
    out = c_skip_t * (x + t.reshape(-1, 1, 1, 1) * z)
    target = torch.cat([x[:1], c_skip_r * (x[1:] + r[1:].reshape(-1, 1, 1, 1) * z[1:])])
    c = 0.00054 * math.sqrt(12)
    expected = (((out - target) ** 2).flatten(1).sum(1) + c * c).sqrt() - c
    expected = expected / (t - r)
    got = ect_loss(student, x, z, t, r, None, pseudo_huber).double()
    rtol = 64 * torch.finfo(torch.float32).eps  # the denoiser wrapper runs in float32
    torch.testing.assert_close(got, expected, rtol=rtol, atol=0)
    got_l2 = ect_loss(student, x, z, t, r, None, l2).double()
    torch.testing.assert_close(got_l2, ((out - target) ** 2).flatten(1).mean(1) / (t - r), rtol=rtol, atol=0)
    got_snr = ect_loss(student, x, z, t, r, None, l2, weighting="snr").double()
    snr = (t ** 2 + 0.25) / (t * 0.5) ** 2
    torch.testing.assert_close(got_snr, ((out - target) ** 2).flatten(1).mean(1) * snr, rtol=rtol, atol=0)


def _point_teacher(point):
    """The exact denoiser of a point mass: its ODE trajectories are x_σ = a + σ·n, straight lines."""
    return lambda x, sigma, labels=None: point.to(x.dtype).expand_as(x)


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_teacher_point_is_the_exact_ode_solution_for_a_point_mass(solver):
    point = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64).reshape(1, 3, 1, 1)
    g = torch.Generator().manual_seed(1)
    n = torch.randn(4, 3, 1, 1, generator=g, dtype=torch.float64)
    t = torch.tensor([0.01, 0.5, 3.0, 80.0], dtype=torch.float64)
    r = torch.tensor([0.0, 0.25, 2.9, 0.001], dtype=torch.float64)  # r = 0: the teacher's x0 estimate
    x_t = point + t.reshape(-1, 1, 1, 1) * n
    got = teacher_point(_point_teacher(point), x_t, t, r, None, solver)
    torch.testing.assert_close(got, point + r.reshape(-1, 1, 1, 1) * n, rtol=0, atol=256 * EPS64)


def test_ect_distillation_loss_uses_the_teachers_ode_step():
    """With a teacher the target is f_θ⁻ at the teacher's ODE point (x_r itself where r ≤ σ_min), not at
    x + r·z: a point-mass teacher puts x_r on the straight line through its point, whatever the data."""
    student = ConsistencyModel(Zero()).double()
    point = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64).reshape(1, 3, 1, 1)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 3, 2, 2, generator=g, dtype=torch.float64)  # data elsewhere than the teacher's point
    z = torch.randn(3, 3, 2, 2, generator=g, dtype=torch.float64)
    t = torch.tensor([0.5, 2.0, 10.0], dtype=torch.float64)
    r = torch.tensor([0.0, 1.0, 9.0], dtype=torch.float64)
    t4, r4 = t.reshape(-1, 1, 1, 1), r.reshape(-1, 1, 1, 1)
    x_t = x + t4 * z
    x_r = point + r4 / t4 * (x_t - point)
    c_skip_t = scalings(t)[0].reshape(-1, 1, 1, 1)
    c_skip_r = scalings(r[1:])[0].reshape(-1, 1, 1, 1)
    target = torch.cat([x_r[:1], c_skip_r * x_r[1:]])
    expected = ((c_skip_t * x_t - target) ** 2).flatten(1).mean(1) / (t - r)
    got = ect_loss(student, x, z, t, r, None, l2, teacher=_point_teacher(point), solver="heun").double()
    torch.testing.assert_close(got, expected, rtol=64 * torch.finfo(torch.float32).eps, atol=0)


def test_ect_training_lowers_the_loss():
    """On a one-point data set f ≡ the point has zero loss at every stage, so the loss must fall."""
    torch.manual_seed(0)
    student = ConsistencyModel(MLP())
    objective = ConsistencyObjective(student, "ect", total_steps=150, ect_stages=2)
    assert objective.distance_name == "pseudo-huber" and not hasattr(objective, "target")
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    point = torch.tensor([0.3, -0.2]).reshape(1, 2, 1, 1)
    batch = Batch(images=point.expand(256, -1, -1, -1), labels=torch.full((256,), -1))

    def eval_loss(step):
        torch.manual_seed(123)
        with torch.no_grad():
            return float(objective.loss("net", batch, step).loss)

    before = [eval_loss(0), eval_loss(149)]
    for step in range(150):
        result = objective.loss("net", batch, step)
        opt.zero_grad()
        result.loss.backward()
        opt.step()
        objective.after_update("net", step)
    assert result.logs["ect_stage"] == 1.0
    assert eval_loss(0) < 0.5 * before[0] and eval_loss(149) < 0.5 * before[1], before


def test_ect_rejects_bad_settings():
    student = ConsistencyModel(MLP())
    with pytest.raises(UserError, match="--ect-stages"):
        ConsistencyObjective(student, "ect", total_steps=10, ect_stages=0)
    with pytest.raises(UserError, match="total number of training steps"):
        ConsistencyObjective(student, "ect")
    with pytest.raises(UserError, match="--ect-weighting: expected one of dt, snr with --mode ect, got 'snr' "
                                        "with --mode ict"):
        ConsistencyObjective(student, "ict", total_steps=10, ect_weighting="snr")
    with pytest.raises(UserError, match="--ect-weighting: .*got 'x'"):
        ConsistencyObjective(student, "ect", total_steps=10, ect_weighting="x")


def test_ect_run_from_a_diffusion_model_round_trips_its_config(tmp_path):
    import json

    from genzoo.api import load, sample
    from genzoo.cli import build_parser
    from genzoo.cli.train import config_from_args
    from genzoo.train.engine import train
    from tests.test_consistency_engine import FLAGS, TEACHER_NET, save_teacher

    save_teacher(tmp_path / "dm")
    train({**FLAGS, "mode": "ect", "init": str(tmp_path / "dm"), "out": str(tmp_path / "ect"),
           "ect_stages": 2})
    saved = json.loads((tmp_path / "ect" / "checkpoint-000002" / "config.json").read_text())
    keys = ("mode", "init", "ect_stages", "ect_q", "ect_weighting")
    assert [saved[k] for k in keys] == ["ect", str(tmp_path / "dm"), 2, 2.0, "dt"]
    assert saved["net"] == TEACHER_NET and saved["distance"] == "pseudo-huber"
    assert (saved["p_mean"], saved["p_std"]) == (-1.1, 2.0)  # the mode's defaults, resolved for resuming
    assert not (tmp_path / "ect" / "checkpoint-000002" / "objective.safetensors").exists()  # no EMA target
    model = load(tmp_path / "ect")
    images, _, nfe = sample(model, "0-1", batch_size=2)
    assert nfe == 1 and images.shape == (2, 3, 8, 8)
    argv = ["train", "--family", "consistency", "--mode", "ect", "--init", "dm", "--data", "shapes:8",
            "--out", "o", "--ect-stages", "4", "--ect-q", "3", "--ect-weighting", "snr"]
    parsed = config_from_args(build_parser().parse_args(argv))
    keys = ("init", "ect_stages", "ect_q", "ect_weighting")
    assert [parsed[k] for k in keys] == ["dm", 4, 3.0, "snr"]
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*argv[:-1], "sqrt"])
    assert exit_.value.code == 2
    with pytest.raises(UserError, match="--mode ect: give the diffusion model"):
        train({**FLAGS, "mode": "ect", "out": str(tmp_path / "x")})
    with pytest.raises(UserError, match="--init: only --mode ect"):
        train({**FLAGS, "mode": "ict", "init": str(tmp_path / "dm"), "out": str(tmp_path / "y")})


def test_ect_with_a_teacher_distils_it_and_with_init_tunes_on_data(tmp_path):
    """``--teacher`` makes the point at r a step of the teacher's ODE (the objective holds the teacher and
    the student starts from its network); ``--init`` alone tunes on data (no teacher)."""
    from types import SimpleNamespace

    from genzoo.checkpoints import save_model_dir
    from genzoo.consistency.family import FAMILY
    from genzoo.diffusion.family import build_diffusion_model
    from tests.test_consistency_engine import TEACHER_NET

    config = {"family": "diffusion", "arch": "ddpmpp", "net": TEACHER_NET, "precond": "edm", "resolution": 8,
              "channels": 3, "num_classes": 0, "sampled_player": "net"}
    torch.manual_seed(0)
    teacher = build_diffusion_model(config)
    weights = {f"net.{k}": v for k, v in teacher.state_dict().items()}
    save_model_dir(tmp_path / "dm", config, {"model": weights})
    data = SimpleNamespace(resolution=8, num_channels=3, num_classes=0)
    distil = FAMILY.build_objective({"mode": "ect", "teacher": str(tmp_path / "dm"), "steps": 10}, data)
    tune = FAMILY.build_objective({"mode": "ect", "init": str(tmp_path / "dm"), "steps": 10}, data)
    assert distil.teacher is not None and tune.teacher is None
    for objective in (distil, tune):
        student = objective.players["net"].model.state_dict()
        assert all(torch.equal(student[k], v) for k, v in teacher.model.state_dict().items())
    batch = Batch(images=torch.zeros(4, 3, 8, 8), labels=torch.full((4,), -1))
    torch.manual_seed(1)
    with torch.no_grad():
        a = float(distil.loss("net", batch, 5).loss)
    torch.manual_seed(1)
    with torch.no_grad():
        b = float(tune.loss("net", batch, 5).loss)
    assert a != b  # same noise, same student: only the point at r differs


def test_ect_adversarial_term_adds_the_adaptively_weighted_generator_loss():
    """``--gan-weight`` with ECT: D trains on data against the student's estimates, and the student's loss is
    the ECT loss plus λ·w·ns_G on a separate pass at Karras-grid σ; sCM still refuses it."""
    from tests.test_consistency_train import PointD

    torch.manual_seed(0)
    student = ConsistencyModel(MLP())
    objective = ConsistencyObjective(student, "ect", total_steps=10, discriminator=PointD(), gan_weight=0.5)
    assert objective.schedule() == [("D", 1), ("net", 1)]
    point = torch.tensor([0.3, -0.2]).reshape(1, 2, 1, 1)
    batch = Batch(images=point.expand(64, -1, -1, -1) + 0.1 * torch.randn(64, 2, 1, 1),
                  labels=torch.full((64,), -1))
    d_result = objective.loss("D", batch, 0)
    d_result.loss.backward()
    assert all(p.grad is None for p in student.parameters())
    assert all(p.grad is not None for p in objective.players["D"].parameters())
    objective.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    ect_only = float(ConsistencyObjective(student, "ect", total_steps=10).loss("net", batch, 9).loss.detach())
    torch.manual_seed(1)
    result = objective.loss("net", batch, 9)
    logs = result.logs
    assert logs["G/adaptive_weight"] > 0
    expected = ect_only + 0.5 * logs["G/adaptive_weight"] * logs["G/adv"]
    assert float(result.loss.detach()) == pytest.approx(expected, rel=1e-5)
    result.loss.backward()
    assert all(p.grad is None for p in objective.players["D"].parameters())  # D is frozen in the net's step
    from genzoo.consistency.trigflow import TrigFlowModel

    with pytest.raises(UserError, match="--gan-weight.*scm"):
        ConsistencyObjective(TrigFlowModel(MLP()), "scm", discriminator=PointD(), gan_weight=0.5)


def test_adaptive_weight_bound_clamps_w_and_is_refused_without_the_adversarial_term():
    """``--gan-adaptive-max B``: the adversarial term is λ·min(w, B)·ns_G; B needs --gan-weight and is > 0."""
    from types import SimpleNamespace

    from genzoo.cli import build_parser
    from genzoo.consistency.family import _adversarial
    from tests.test_consistency_train import PointD

    point = torch.tensor([0.3, -0.2]).reshape(1, 2, 1, 1)
    batch = Batch(images=point.expand(64, -1, -1, -1) + 0.1 * torch.randn(64, 2, 1, 1),
                  labels=torch.full((64,), -1))
    weights = {}
    for bound in (1e4, 1e-3):
        torch.manual_seed(0)
        student = ConsistencyModel(MLP())
        objective = ConsistencyObjective(student, "ect", total_steps=10, discriminator=PointD(),
                                         gan_weight=0.5, adaptive_max=bound)
        torch.manual_seed(1)
        plain = ConsistencyObjective(student, "ect", total_steps=10)
        ect_only = float(plain.loss("net", batch, 9).loss.detach())
        torch.manual_seed(1)
        result = objective.loss("net", batch, 9)
        weights[bound] = result.logs["G/adaptive_weight"]
        expected = ect_only + 0.5 * weights[bound] * result.logs["G/adv"]
        assert float(result.loss.detach()) == pytest.approx(expected, rel=1e-5)
    assert weights[1e4] > 1e-3 and weights[1e-3] == pytest.approx(1e-3, rel=1e-6)  # clamped to the bound
    with pytest.raises(UserError, match="--gan-adaptive-max"):
        ConsistencyObjective(ConsistencyModel(MLP()), "ect", total_steps=10, discriminator=PointD(),
                             gan_weight=0.5, adaptive_max=0.0)
    data = SimpleNamespace(resolution=8, num_channels=3, num_classes=0)
    with pytest.raises(UserError, match="--gan-adaptive-max: .*give --gan-weight"):
        _adversarial({"gan_adaptive_max": 2.0}, data)
    config = {"gan_weight": 1.0, "d_ch": 4}
    assert _adversarial(config, data)["adaptive_max"] == 1e4 and config["gan_adaptive_max"] == 1e4
    assert _adversarial({"gan_weight": 1.0, "d_ch": 4, "gan_adaptive_max": 2.0}, data)["adaptive_max"] == 2.0
    argv = ["train", "--family", "consistency", "--mode", "ect", "--teacher", "t", "--data", "shapes:8",
            "--out", "o", "--gan-weight", "1", "--gan-adaptive-max"]
    assert build_parser().parse_args([*argv, "2"]).gan_adaptive_max == 2.0
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*argv, "0"])
    assert exit_.value.code == 2


def test_lpips_size_reaches_the_distance_of_a_family_built_objective(tmp_path):
    from types import SimpleNamespace

    from genzoo.checkpoints import save_model_dir
    from genzoo.consistency.family import FAMILY
    from genzoo.diffusion.family import build_diffusion_model
    from tests.test_consistency_core import _random_lpips_file
    from tests.test_consistency_engine import TEACHER_NET

    config = {"family": "diffusion", "arch": "ddpmpp", "net": TEACHER_NET, "precond": "edm", "resolution": 8,
              "channels": 3, "num_classes": 0, "sampled_player": "net"}
    teacher = build_diffusion_model(config)
    weights = {f"net.{k}": v for k, v in teacher.state_dict().items()}
    save_model_dir(tmp_path / "dm", config, {"model": weights})
    data = SimpleNamespace(resolution=8, num_channels=3, num_classes=0)
    options = {"mode": "ect", "init": str(tmp_path / "dm"), "steps": 10, "distance": "lpips",
               "lpips_weights": _random_lpips_file(tmp_path), "lpips_size": 32}
    objective = FAMILY.build_objective(dict(options), data)
    assert objective.distance.keywords == {"size": 32}
    with pytest.raises(UserError, match="--lpips-size: only --distance lpips"):
        FAMILY.build_objective({**options, "distance": "pseudo-huber"}, data)
    config = {**options, "distance": None, "lpips_mix": 10.0}
    mixed = FAMILY.build_objective(config, data)  # ECT's default distance plus 10·LPIPS at 32 px
    assert mixed.distance_name == config["distance"] == "pseudo-huber"
    x, y = torch.rand(2, 3, 8, 8) * 2 - 1, torch.rand(2, 3, 8, 8) * 2 - 1
    torch.testing.assert_close(mixed.distance(x, y), pseudo_huber(x, y) + 10 * objective.distance(x, y))


def test_lognormal_sigmas_follow_the_clamped_lognormal_cdf():
    """ln σ ~ N(P_mean, P_std²) clamped to [σ_min, σ_max]: the empirical CDF of n draws against
    Φ((ln s − P_mean)/P_std); by the DKW inequality sup|F_n − F| > 0.01 has probability ≤ 2e^(−2n·1e-4)."""
    from genzoo.consistency.schedules import lognormal_sigmas

    n, p_mean, p_std, lo, hi = 100_000, -0.4, 1.6, 0.002, 80.0
    torch.manual_seed(0)
    sigmas = lognormal_sigmas(n, p_mean, p_std, lo, hi).double()
    assert float(sigmas.min()) >= lo and float(sigmas.max()) <= hi
    points = torch.tensor([0.01, 0.1, 0.5, 1.0, 2.0, 5.0, 20.0, 79.0], dtype=torch.float64)
    empirical = (sigmas[None, :] <= points[:, None]).double().mean(1)
    closed = 0.5 * (1 + torch.erf((points.log() - p_mean) / (p_std * math.sqrt(2))))
    assert float((empirical - closed).abs().max()) < 0.01
    above = float((sigmas >= hi).double().mean())  # the clamped tail: P(σ ≥ σ_max) = 1 − Φ((ln 80 − μ)/s)
    assert above == pytest.approx(0.5 * math.erfc((math.log(hi) - p_mean) / (p_std * math.sqrt(2))), abs=0.01)


def test_p_mean_and_p_std_reach_ects_noise_levels_and_default_per_mode():
    """``--p-mean``/``--p-std``: ECT's t (stage 0: r = 0, so the logged mean Δt is the mean t) follows them;
    unset they are the mode's defaults; modes without lognormal noise levels and bad values are refused."""
    from genzoo.cli import build_parser
    from genzoo.consistency.trigflow import SCM_P_MEAN, SCM_P_STD, TrigFlowModel

    batch = Batch(images=torch.zeros(4096, 2, 1, 1), labels=torch.full((4096,), -1))
    objective = ConsistencyObjective(ConsistencyModel(MLP()), "ect", total_steps=10, p_mean=1.0, p_std=1e-3)
    with torch.no_grad():
        logs = objective.loss("net", batch, 0).logs
    assert logs["ect_stage"] == 0.0 and logs["mean_dt"] == pytest.approx(math.e, rel=1e-3)
    assert (ConsistencyObjective(ConsistencyModel(MLP()), "ect", total_steps=10).p_mean,
            ConsistencyObjective(ConsistencyModel(MLP()), "ict", total_steps=10).p_std) == (-1.1, 2.0)
    scm = ConsistencyObjective(TrigFlowModel(MLP()), "scm", total_steps=10)
    assert (scm.p_mean, scm.p_std) == (SCM_P_MEAN, SCM_P_STD)
    with pytest.raises(UserError, match="--p-mean/--p-std: only --mode ict, ect, scm .* not --mode ct"):
        ConsistencyObjective(ConsistencyModel(MLP()), "ct", total_steps=10, p_mean=0.0)
    with pytest.raises(UserError, match="--p-mean/--p-std: expected a finite P_mean and P_std > 0"):
        ConsistencyObjective(ConsistencyModel(MLP()), "ect", total_steps=10, p_std=0.0)
    argv = ["train", "--family", "consistency", "--mode", "ect", "--teacher", "t", "--data", "shapes:8",
            "--out", "o", "--p-mean", "-0.4", "--p-std"]
    parsed = build_parser().parse_args([*argv, "1.6"])
    assert (parsed.p_mean, parsed.p_std) == (-0.4, 1.6)
    for bad in ("0", "-1", "x"):
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args([*argv, bad])
        assert exit_.value.code == 2


def test_dropout_reaches_a_student_copied_from_the_teacher(tmp_path):
    """``--dropout P`` with ``--teacher``/``--init``: the student's copy of the teacher's network gets P in
    every block (and its config), the teacher keeps its own; a network without dropout is refused."""
    from types import SimpleNamespace

    from genzoo.checkpoints import save_model_dir
    from genzoo.consistency.family import FAMILY, _set_dropout
    from genzoo.diffusion.family import build_diffusion_model
    from tests.test_consistency_engine import TEACHER_NET

    config = {"family": "diffusion", "arch": "ddpmpp", "net": TEACHER_NET, "precond": "edm", "resolution": 8,
              "channels": 3, "num_classes": 0, "sampled_player": "net"}
    torch.manual_seed(0)
    teacher = build_diffusion_model(config)
    with torch.no_grad():  # no zero-initialised convolutions, which would hide the dropout behind them
        for param in teacher.parameters():
            param.add_(0.05 * torch.randn_like(param))
    weights = {f"net.{k}": v for k, v in teacher.state_dict().items()}
    save_model_dir(tmp_path / "dm", config, {"model": weights})
    data = SimpleNamespace(resolution=8, num_channels=3, num_classes=0)
    run_config = {"mode": "ect", "teacher": str(tmp_path / "dm"), "steps": 10, "dropout": 0.25}
    objective = FAMILY.build_objective(run_config, data)
    student = objective.players["net"]
    def rates(module):
        return [m.p for m in module.modules() if isinstance(m, nn.Dropout)]

    assert rates(student) and set(rates(student)) == {0.25} and run_config["net"]["dropout"] == 0.25
    assert set(rates(objective.teacher)) == {TEACHER_NET["dropout"]}
    x, sigma = torch.randn(2, 3, 8, 8), torch.full((2,), 1.0)
    student.train()
    with torch.no_grad():
        assert not torch.equal(student(x, sigma), student(x, sigma))  # dropout is active in training
    with pytest.raises(UserError, match="--dropout: the network of T has no dropout setting"):
        _set_dropout(nn.Linear(2, 2), {}, 0.1, "T")
