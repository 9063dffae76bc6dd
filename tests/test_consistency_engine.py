"""`genzoo train --family consistency` through the shared engine (CD from a diffusion run, iCT), sampling."""

import json

import pytest
import torch

from genzoo.checkpoints import load_safetensors, save_model_dir
from genzoo.diffusion.family import build_diffusion_model

TEACHER_NET = dict(resolution=8, in_channels=3, out_channels=3, label_dim=0, model_channels=32,
                   channel_mult=[1, 2], num_blocks=1, attn_resolutions=[], dropout=0.0)
FLAGS = dict(family="consistency", data="shapes:8", steps=2, batch=4, sample_every=0, checkpoint_every=2,
             log_every=1, tensorboard=False, seed=0, ema=0.9)


def save_teacher(path, seed=0, num_classes=0, jitter=0.0):
    """A random-weights EDM DDPM++ diffusion model (``TEACHER_NET``) saved as a model directory: a CD or
    sCM teacher, ECT's ``--init``. ``jitter`` perturbs every weight (the zero-initialised output layers
    otherwise make D(x, σ) = c_skip·x)."""
    config = {"family": "diffusion", "arch": "ddpmpp", "net": {**TEACHER_NET, "label_dim": num_classes},
              "precond": "edm", "resolution": 8, "channels": 3, "num_classes": num_classes,
              "sampled_player": "net"}
    torch.manual_seed(seed)
    teacher = build_diffusion_model(config)
    if jitter:
        with torch.no_grad():
            for p in teacher.parameters():
                p.add_(torch.randn_like(p) * jitter)
    save_model_dir(path, config, {"model": {f"net.{k}": v for k, v in teacher.state_dict().items()}})
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from genzoo.train.engine import train

    root = tmp_path_factory.mktemp("cm")
    save_teacher(root / "teacher")
    train({**FLAGS, "teacher": str(root / "teacher"), "out": str(root / "cd"), "num_scales": 10})
    train({**FLAGS, "mode": "ict", "arch": "ddpmpp", "model_channels": 32, "out": str(root / "ict")})
    train({**FLAGS, "teacher": str(root / "teacher"), "out": str(root / "cd_gan"), "num_scales": 4,
           "teacher_steps": 2, "gan_weight": 1.0, "d_ch": 4})
    return root


def test_cd_run_saves_student_target_and_resolved_config(runs):
    ckpt = runs / "cd" / "checkpoint-000002"
    config = json.loads((ckpt / "config.json").read_text())
    assert config["mode"] == "cd" and config["num_scales"] == 10 and config["arch"] == "ddpmpp"
    assert config["net"] == TEACHER_NET and config["distance"] == "l2" and config["mu0"] == 0.95
    objective = load_safetensors(ckpt / "objective.safetensors")
    assert objective and all(k.startswith("target.") for k in objective)
    student = load_safetensors(ckpt / "model.safetensors")
    teacher = load_safetensors(runs / "teacher" / "model.safetensors")
    assert set(student) == set(teacher)  # same network, "net.model.*"
    changed = [k for k in student if not torch.equal(student[k], teacher[k])]
    assert changed  # trained away from the teacher it started from


def test_sampling_cd_and_ict_runs(runs, tmp_path, capsys):
    from genzoo.api import load, sample
    from genzoo.cli import main
    from genzoo.consistency import ConsistencyModel

    model = load(runs / "cd")
    assert isinstance(model, ConsistencyModel)
    images, _, nfe = sample(model, "0-2", batch_size=2)
    again, _, _ = sample(model, "2", batch_size=1)
    assert nfe == 1 and images.shape == (3, 3, 8, 8) and torch.equal(images[2:], again)
    low, _, _ = sample(model, "0-2", batch_size=2, precision="bf16")
    assert (low.float() - images.float()).abs().mean() < 4  # bf16 autocast: close, in uint8 levels
    assert main(["sample", "--ckpt", str(runs / "ict"), "--seeds", "0-3", "--ts", "0,5,10", "--steps", "11",
                 "--grid", str(tmp_path / "g.png")]) == 0
    assert "NFE 2" in capsys.readouterr().out and (tmp_path / "g.png").is_file()
    config = json.loads((runs / "ict" / "checkpoint-000002" / "config.json").read_text())
    assert config["mode"] == "ict" and config["distance"] == "pseudo-huber" and config["s1"] == 1280


def test_adversarial_cd_saves_d_beside_the_student_and_resumes(runs):
    from genzoo.api import load, sample
    from genzoo.consistency import ConsistencyModel
    from genzoo.train.engine import train

    ckpt = runs / "cd_gan" / "checkpoint-000002"
    config = json.loads((ckpt / "config.json").read_text())
    assert config["gan_weight"] == 1.0 and config["teacher_steps"] == 2
    assert (config["d_ch"], config["d_lr"], config["r1_gamma"]) == (4, 2e-3, 0.1)  # resolved defaults
    weights = load_safetensors(ckpt / "model.safetensors")
    assert any(k.startswith("D.") for k in weights) and any(k.startswith("net.") for k in weights)
    log = [json.loads(line) for line in (runs / "cd_gan" / "metrics.jsonl").read_text().splitlines()]
    assert any("G/adaptive_weight" in row and "D/r1" in row for row in log)
    model = load(runs / "cd_gan")  # the student only
    assert isinstance(model, ConsistencyModel)
    assert sample(model, "0-1", batch_size=2)[0].shape == (2, 3, 8, 8)
    train({**FLAGS, "teacher": str(runs / "teacher"), "out": str(runs / "cd_gan"), "num_scales": 4,
           "teacher_steps": 2, "gan_weight": 1.0, "d_ch": 4, "steps": 3, "resume": True})
    resumed = load_safetensors(runs / "cd_gan" / "checkpoint-000003" / "model.safetensors")
    assert set(resumed) == set(weights)


def test_cd_without_teacher_is_a_user_error(tmp_path):
    from genzoo.errors import UserError
    from genzoo.train.engine import train

    with pytest.raises(UserError, match="--teacher"):
        train({**FLAGS, "mode": "cd", "out": str(tmp_path / "x")})


def test_cd_teacher_guidance_distils_the_guided_teacher(runs, tmp_path):
    from types import SimpleNamespace

    from genzoo.api import load
    from genzoo.consistency.family import FAMILY
    from genzoo.diffusion.guidance import ClassifierFreeGuidance
    from genzoo.errors import UserError

    save_teacher(tmp_path / "teacher", seed=1, num_classes=4, jitter=0.05)
    data = SimpleNamespace(resolution=8, num_channels=3, num_classes=4)
    objective = FAMILY.build_objective({"mode": "cd", "teacher": str(tmp_path / "teacher"),
                                        "teacher_guidance": 3.0}, data)
    assert isinstance(objective.teacher, ClassifierFreeGuidance) and objective.teacher.scale == 3.0
    plain = load(tmp_path / "teacher")
    x, sigma, y = torch.randn(2, 3, 8, 8), torch.tensor([0.5, 2.0]), torch.tensor([1, 3])
    null = torch.full_like(y, 4)
    expected = plain(x, sigma, null) + 3.0 * (plain(x, sigma, y) - plain(x, sigma, null))
    torch.testing.assert_close(objective.teacher(x, sigma, y), expected, rtol=1e-4, atol=1e-5)
    unguided = FAMILY.build_objective({"mode": "cd", "teacher": str(tmp_path / "teacher")}, data)
    assert not isinstance(unguided.teacher, ClassifierFreeGuidance)
    with pytest.raises(UserError, match="--teacher-guidance"):
        FAMILY.build_objective({"mode": "cd", "teacher": str(runs / "teacher"), "teacher_guidance": 2.0},
                               SimpleNamespace(resolution=8, num_channels=3, num_classes=0))


def test_cli_flags_of_the_teacher_solver_and_the_adversarial_term():
    from genzoo.cli import build_parser
    from genzoo.cli.train import config_from_args

    argv = ["train", "--family", "consistency", "--mode", "cd", "--teacher", "t", "--data", "shapes:16",
            "--out", "o", "--num-scales", "4", "--teacher-steps", "3", "--gan-weight", "0.5", "--d-ch", "16",
            "--d-lr", "1e-3", "--r1-gamma", "0.2"]
    config = config_from_args(build_parser().parse_args(argv))
    assert (config["num_scales"], config["teacher_steps"], config["gan_weight"]) == (4, 3, 0.5)
    assert (config["d_ch"], config["d_lr"], config["r1_gamma"]) == (16, 1e-3, 0.2)


def test_search_middle_samples_with_the_schedule_of_lowest_fd(runs, tmp_path, capsys):
    import re

    from genzoo.api import load, sample
    from genzoo.cli import main
    from genzoo.errors import UserError

    argv = ["sample", "--ckpt", str(runs / "cd"), "--steps", "8", "--search-middle", "shapes:8",
            "--search-seeds", "0-15", "--seeds", "0-3", "--out", str(tmp_path / "s.npz")]
    assert main(argv) == 0
    captured = capsys.readouterr()
    table = captured.err.split(")", 1)[1]
    scores = {int(m): float(fd) for m, fd in re.findall(r"(\d+): ([0-9.e+-]+)", table)}
    best = int(re.search(r"--ts 0,(\d+),7", captured.err).group(1))
    assert len(scores) >= 3 and best == min(scores, key=scores.get) and 1 <= best <= 6
    assert "NFE 2" in captured.out
    model = load(runs / "cd")
    searched, _, _ = sample(model, "0-3", steps=8, search_middle="shapes:8", search_seeds="0-15")
    fixed, _, nfe = sample(model, "0-3", steps=8, ts=f"0,{best},7")
    assert nfe == 2 and torch.equal(searched, fixed)
    with pytest.raises(UserError, match="--search-middle"):
        sample(model, "0", steps=8, ts="0,3,7", search_middle="shapes:8")


def test_sigmas_option_samples_at_the_given_levels(runs, tmp_path):
    from genzoo.api import load, sample
    from genzoo.cli import main
    from genzoo.consistency.sampling import schedule_sigmas
    from genzoo.errors import UserError

    model = load(runs / "cd")
    levels = schedule_sigmas(model.sigma_min, model.sigma_max, model.rho, 2)
    default, _, _ = sample(model, "0-3", steps=2)
    explicit, _, nfe = sample(model, "0-3", sigmas=",".join(repr(s) for s in levels))
    assert nfe == 2 and torch.equal(default, explicit)
    other, _, nfe = sample(model, "0-3", sigmas="80,0.5")
    assert nfe == 2 and not torch.equal(other, default)
    assert main(["sample", "--ckpt", str(runs / "cd"), "--sigmas", "20", "--seeds", "0-1", "--out",
                 str(tmp_path / "s.npz")]) == 0
    for options, message in [(dict(sigmas="80,1", ts="0,3,7", steps=8), "--ts"),
                             (dict(sigmas="80,1", steps=3), "--steps 3 disagrees"),
                             (dict(sigmas="1,80"), "strictly decreasing"),
                             (dict(sigmas="80,1", search_middle="shapes:8"), "--search-middle")]:
        with pytest.raises(UserError, match=message):
            sample(model, "0", **options)
    assert main(["sample", "--ckpt", str(runs / "cd"), "--sigmas", "100", "--seeds", "0"]) == 2


def test_decay_kimg_decays_the_students_learning_rate(runs):
    from types import SimpleNamespace

    from genzoo.consistency.family import FAMILY
    from genzoo.train.objective import learning_rate

    data = SimpleNamespace(resolution=8, num_channels=3, num_classes=0)
    objective = FAMILY.build_objective({"mode": "ect", "init": str(runs / "teacher"), "steps": 10, "lr": 1e-3,
                                        "decay_kimg": 2.0}, data)
    spec = objective.optimizer_specs()["net"]
    assert spec.decay_images == 2000.0
    assert learning_rate(spec.lr, 8000.0, 0.0, spec.decay_images) == pytest.approx(1e-3 / 2, rel=1e-12)
    assert FAMILY.build_objective({"mode": "ect", "init": str(runs / "teacher"), "steps": 10},
                                  data).optimizer_specs()["net"].decay_images == 0.0
    from genzoo.errors import UserError

    with pytest.raises(UserError, match="^--decay-kimg: expected t_ref ≥ 0 thousand images, got -1$"):
        FAMILY.build_objective({"mode": "ect", "init": str(runs / "teacher"), "steps": 10,
                                "decay_kimg": -1.0}, data)


def test_cd_with_trajectory_targets_resumes_exactly(runs, tmp_path):
    from genzoo.train.engine import train

    flags = {**FLAGS, "teacher": str(runs / "teacher"), "num_scales": 4, "cd_targets": "trajectory",
             "trajectory_pool": 12, "trajectory_refresh": 5, "checkpoint_every": 1, "steps": 4, "ema": None}
    train({**flags, "out": str(tmp_path / "straight")})
    train({**flags, "out": str(tmp_path / "resumed"), "steps": 2})
    train({**flags, "out": str(tmp_path / "resumed"), "resume": True})
    straight = load_safetensors(tmp_path / "straight" / "checkpoint-000004" / "model.safetensors")
    resumed = load_safetensors(tmp_path / "resumed" / "checkpoint-000004" / "model.safetensors")
    assert set(straight) == set(resumed) and all(torch.equal(straight[k], resumed[k]) for k in straight)
    config = json.loads((tmp_path / "straight" / "checkpoint-000004" / "config.json").read_text())
    keys = ("cd_targets", "trajectory_pool", "trajectory_refresh")
    assert [config[k] for k in keys] == ["trajectory", 12, 5]
    teacher = load_safetensors(runs / "teacher" / "model.safetensors")
    assert any(not torch.equal(teacher[k], straight[k]) for k in teacher)  # it trained
    objective = tmp_path / "straight" / "checkpoint-000004" / "objective.safetensors"
    assert not objective.exists() or not load_safetensors(objective)  # no target network


def test_cli_flags_of_trajectory_targets():
    from genzoo.cli import build_parser
    from genzoo.cli.train import config_from_args

    argv = ["train", "--family", "consistency", "--mode", "cd", "--teacher", "t", "--data", "shapes:16",
            "--out", "o", "--cd-targets", "trajectory", "--trajectory-pool", "64",
            "--trajectory-refresh", "2"]
    config = config_from_args(build_parser().parse_args(argv))
    keys = ("cd_targets", "trajectory_pool", "trajectory_refresh")
    assert [config[k] for k in keys] == ["trajectory", 64, 2]
    with pytest.raises(SystemExit):
        build_parser().parse_args([*argv[:-6], "--cd-targets", "exact"])


def test_post_hoc_ema_for_a_consistency_student(runs, tmp_path):
    from genzoo.api import load, posthoc_ema, record_of, sample

    (model_dir,) = posthoc_ema(runs / "cd", tmp_path / "m", std=0.08)
    model = load(model_dir)
    record = record_of(model)
    assert record.config["posthoc_ema"]["std"] == 0.08 and record.family == "consistency"
    images, _, nfe = sample(model, "0-1")
    assert images.shape == (2, 3, 8, 8) and nfe == 1
