"""A run's config.json records the values the run applied (issue #17): no null, no "auto"; an option that
does not apply to the run (another arch's, another mode's) is left out; a CD student's network flags are
its teacher's. Resuming compares the same record, and an older config.json with nulls still loads."""

import json

import pytest
import torch

import genzoo
from genzoo.gan import gigagan
from genzoo.train.config import family_train_keys
from genzoo.train.engine import train
from tests.test_consistency_engine import FLAGS as CONSISTENCY
from tests.test_consistency_engine import TEACHER_NET, save_teacher

COMMON = dict(data="shapes:8", steps=1, batch=4, sample_every=0, checkpoint_every=1, log_every=1,
              tensorboard=False, seed=0)
NET = dict(model_channels=8, num_blocks=1, channel_mult="1", attn_res="")
GAN = dict(COMMON, family="gan", data="shapes:16?count=64", g_ch=8, d_ch=8, z_dim=8)
RUNS = {
    "edm": dict(COMMON, family="diffusion", arch="ddpmpp", **NET),
    "edm2": dict(COMMON, family="diffusion", arch="edm2", **NET),
    "adm": dict(COMMON, family="diffusion", arch="adm", precond="iddpm", model_channels=32, num_blocks=1,
                channel_mult="1", attn_res="4"),
    "classifier": dict(COMMON, family="classifier", classifier_width=32, classifier_depth=1),
    "cd": dict(CONSISTENCY, steps=1, mode="cd"),
    "ect": dict(CONSISTENCY, steps=1, mode="ect"),
    "scm": dict(CONSISTENCY, steps=1, mode="scm"),
    "biggan": dict(GAN, arch="biggan", shared_dim=4),
    "r3gan": dict(GAN, arch="r3gan"),
    "gigagan": dict(GAN, arch="gigagan", w_dim=16, text_dim=16, text_depth=1, kernels=2, attn_res="8"),
}
#: the options each run applies without their being given, and the value it applies
APPLIED = {
    "edm": {"dropout": 0.0, "adaptive_scale": False, "uncond": False, "ema_halflife_kimg": 500.0,
            "lr_warmup_kimg": 10.0, "lr": 1e-3},
    "edm2": {"dropout": 0.0, "uncond": False, "ema_halflife_kimg": 500.0},
    "adm": {"dropout": 0.0, "diffusion_steps": 1000, "noise_schedule": "cosine"},
    "classifier": {"classifier_attention_resolutions": "32,16,8", "classifier_pool": "attention",
                   "channel_mult": "1,2", "diffusion_steps": 1000, "noise_schedule": "linear", "lr": 3e-4},
    "cd": {"model_channels": 32, "channel_mult": "1,2", "num_blocks": 1, "attn_res": "", "dropout": 0.0,
           "adaptive_scale": False, "gan_weight": 0.0, "teacher_guidance": 1.0, "ema": 0.9, "ema_start": 0,
           "lr_warmup_kimg": 0.0},
    "ect": {"model_channels": 32, "channel_mult": "1,2", "num_blocks": 1, "dropout": 0.0},
    "scm": {"model_channels": 32, "dropout": 0.0, "tangent_warmup": 0, "teacher_guidance": 1.0},
    "biggan": {"ema": 0.9999, "g_lr": 1e-4, "d_lr": 4e-4, "attn_res": "8", "lr_warmup_kimg": 0.0},
    "r3gan": {"r1_gamma": 0.0125, "g_lr": 2e-4},
    "gigagan": {"ema_halflife_kimg": 10.0, "text_tokenizer": "vocab", "ema_rampup": 0.05},
}
GIGAGAN_ONLY = set(gigagan.GigaGANTrainOptions.names()) - {"z_dim", "g_ch", "d_ch", "attn_res"}
#: options that do not apply to each run
NOT_APPLIED = {
    "edm": {"diffusion_steps", "noise_schedule", "lr_ref", "ema", "ema_start", "grad_clip", "minutes",
            "config", "phema_snapshot_kimg"},
    "edm2": {"adaptive_scale", "diffusion_steps", "ema"},
    "adm": {"adaptive_scale"},
    "classifier": {"ema", "ema_halflife_kimg", "phema_stds", "model_channels"},
    "cd": {"uncond", "augment", "d_ch", "d_lr", "r1_gamma", "ect_q", "ect_stages", "init", "tangent_warmup",
           "teacher_guide_model", "ema_halflife_kimg", "ema_rampup"},
    "ect": {"uncond", "augment", "tangent_warmup", "teacher_guidance"},
    "scm": {"uncond", "augment", "ect_q", "ect_stages", "init"},
    "biggan": {"lr", *GIGAGAN_ONLY},
    "r3gan": {"lr", "shared_dim", *GIGAGAN_ONLY},
    "gigagan": {"lr", *gigagan.NOT_READ, *gigagan.NOT_READ_BY["gigagan"], "ema", "ema_start"},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("record")
    save_teacher(root / "teacher")
    out = {}
    for name, config in RUNS.items():
        extra = {"teacher": str(root / "teacher")} if name in ("cd", "scm") else \
            {"init": str(root / "teacher")} if name == "ect" else {}
        out[name] = train({**config, **extra, "out": str(root / name)})
    yield out
    torch.set_num_threads(threads)


def _nulls_and_autos(value, path=""):
    if value is None or value == "auto":
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _nulls_and_autos(item, f"{path}.{key}")


@pytest.mark.parametrize("name", list(RUNS))
def test_config_json_records_applied_values_only(runs, name):
    for path in (runs[name] / "config.json", *sorted(runs[name].glob("checkpoint-*/config.json"))):
        config = json.loads(path.read_text())
        assert not [k for k, v in config.items() if v is None or v == "auto"], path
        for key, value in APPLIED[name].items():
            assert config.get(key) == pytest.approx(value) if isinstance(value, float) else \
                config.get(key) == value, (key, config.get(key))
        assert not NOT_APPLIED[name] & set(config), NOT_APPLIED[name] & set(config)
        other = {"diffusion": "gan", "consistency": "gan", "gan": "diffusion",
                 "classifier": "gan"}[config["family"]]
        assert not (set(family_train_keys(other)) - set(family_train_keys(config["family"]))) & set(config)


@pytest.mark.parametrize("name", ["cd", "ect", "scm"])
def test_a_student_records_its_teachers_network(runs, name):
    config = json.loads((runs[name] / "config.json").read_text())
    assert config["net"] == TEACHER_NET
    assert (config["model_channels"], config["channel_mult"], config["num_blocks"], config["dropout"]) == \
        (TEACHER_NET["model_channels"], ",".join(map(str, TEACHER_NET["channel_mult"])),
         TEACHER_NET["num_blocks"], TEACHER_NET["dropout"])


@pytest.mark.parametrize("name", ["edm", "cd", "biggan", "gigagan"])
def test_resume_reads_the_record_back_without_reporting_changes(runs, name, capsys):
    capsys.readouterr()
    before = json.loads((runs[name] / "config.json").read_text())
    train({"out": str(runs[name]), "resume": True, "steps": 2})
    err = capsys.readouterr().err
    assert "resumed from" in err and "settings changed" not in err, err
    after = json.loads((runs[name] / "config.json").read_text())
    assert {k: v for k, v in after.items() if k not in ("steps", "resume")} == \
        {k: v for k, v in before.items() if k not in ("steps", "resume")}


def test_an_older_config_json_with_nulls_still_loads_and_resumes(runs, tmp_path, capsys):
    import shutil

    run = tmp_path / "old"
    shutil.copytree(runs["edm"], run)
    nulls = {"dropout": None, "ema": None, "grad_clip": None, "diffusion_steps": None, "noise_schedule": None,
             "lr_ref": None, "uncond": None, "config": None, "minutes": None, "phema_snapshot_kimg": None}
    for path in (run / "config.json", *run.glob("checkpoint-*/config.json")):
        config = json.loads(path.read_text())
        config.pop("adaptive_scale")
        path.write_text(json.dumps({**config, **nulls, "device": "auto", "lr_warmup_kimg": None}))
    new, old = genzoo.load(runs["edm"]), genzoo.load(run)
    assert genzoo.record_of(old).config["dropout"] is None
    for a, b in zip(new.state_dict().values(), old.state_dict().values()):
        assert torch.equal(a, b)
    capsys.readouterr()
    train({"out": str(run), "resume": True, "steps": 3})
    err = capsys.readouterr().err
    assert "resumed from" in err and "settings changed" not in err, err
    config = json.loads((run / "config.json").read_text())
    assert config["dropout"] == 0.0 and "ema" not in config and config["device"] == "cpu"
