"""Typed options (issue #17): each family's options are dataclasses; the CLI, the API and the app derive
from them, and an option a family does not take is refused, by the CLI (exit 2, one line naming the
option and the family) and by the API (a UserError naming it)."""

from types import SimpleNamespace

import pytest
import torch

import genzoo
from genzoo import nets
from genzoo.checkpoints import save_model_dir
from genzoo.cli import main
from genzoo.errors import UserError
from genzoo.family import family_names, get_family
from genzoo.options import Options

DATA = SimpleNamespace(resolution=8, num_channels=3, num_classes=4)
NET = dict(model_channels=8, num_blocks=1, channel_mult="1", attn_res="")


def _save_objective(path, family_name, config, data=DATA):
    """A model directory with the random weights of a family's objective built from ``config``."""
    torch.manual_seed(0)
    family = get_family(family_name)
    objective = family.build_objective(config, data)
    player = objective.sampled_player
    config.update(family=family_name, sampled_player=player, num_classes=data.num_classes,
                  resolution=data.resolution, channels=data.num_channels)
    weights = {f"{player}.{k}": v for k, v in objective.players[player].state_dict().items()}
    save_model_dir(path, config, {"model": weights})
    return path


def _save_gigagan(path):
    torch.manual_seed(0)
    net = dict(resolution=8, z_dim=8, w_dim=16, channel_base=64, channel_max=8, num_kernels=2, attn_res=[8],
               head_dim=8, text={"kind": "learned", "dim": 16, "depth": 1, "heads": 2},
               default_prompts=["a red circle"])
    model = nets.build("gigagan-generator", **net)
    config = {"family": "gan", "arch": "gigagan", "net": net, "sampled_player": "G", "num_classes": 0,
              "resolution": 8, "channels": 3}
    save_model_dir(path, config, {"model": {f"G.{k}": v for k, v in model.state_dict().items()}})
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {
        "edm": _save_objective(root / "edm", "diffusion", {"arch": "ddpmpp", **NET}),
        "adm": _save_objective(root / "adm", "diffusion",
                               {"arch": "adm", "precond": "iddpm", "loss": "hybrid", "diffusion_steps": 10,
                                **NET, "model_channels": 32}),
        "edm2": _save_objective(root / "edm2", "diffusion", {"arch": "edm2", **NET, "attn_res": "none"}),
        "consistency": _save_objective(root / "cm", "consistency", {"mode": "ict", "steps": 10, **NET}),
        "biggan": _save_objective(root / "biggan", "gan", {"arch": "biggan", "g_ch": 2, "d_ch": 2, "z_dim": 6,
                                                           "shared_dim": 4, "attn_res": "none"},
                                  SimpleNamespace(resolution=16, num_channels=3, num_classes=4)),
        "gigagan": _save_gigagan(root / "gigagan"),
    }


#: (model, a flag it does not take, its value, the family the message names)
FOREIGN = [
    ("edm", "--truncation", "0.5", "diffusion"),
    ("edm", "--prompt", "red", "diffusion"),
    ("edm", "--ts", "0,5", "diffusion"),
    ("adm", "--truncation", "0.5", "diffusion"),
    ("edm2", "--search-middle", "shapes", "diffusion"),
    ("consistency", "--guidance", "2", "consistency"),
    ("consistency", "--sampler", "heun", "consistency"),
    ("biggan", "--prompt", "red", "gan (BigGAN)"),
    ("biggan", "--steps", "4", "gan (BigGAN)"),
    ("gigagan", "--standing-stats", "2", "gan (GigaGAN)"),
    ("gigagan", "--guidance", "3", "gan (GigaGAN)"),
]


@pytest.mark.parametrize("name,flag,value,family", FOREIGN)
def test_cli_refuses_an_option_the_family_does_not_take(models, tmp_path, capsys, name, flag, value, family):
    grid = tmp_path / "g.png"
    code = main(["sample", "--ckpt", str(models[name]), "--seeds", "0", "--grid", str(grid), flag, value])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"{flag}: not an option of the {family} family" in err
    assert not grid.exists()


@pytest.mark.parametrize("name,flag,value,family", FOREIGN)
def test_api_refuses_a_keyword_the_family_does_not_take(models, name, flag, value, family):
    model = genzoo.load(models[name])
    keyword = flag.lstrip("-").replace("-", "_")
    with pytest.raises(UserError) as err:
        genzoo.sample(model, "0", **{keyword: value})
    assert f"{flag}: not an option of the {family} family" in str(err.value)


@pytest.mark.parametrize("name,typo,meant", [("edm", "stpes", "steps"), ("edm", "guidanse", "guidance"),
                                             ("consistency", "stepz", "steps"),
                                             ("biggan", "truncaton", "truncation")])
def test_api_names_a_misspelled_keyword_and_suggests_the_option(models, name, typo, meant):
    model = genzoo.load(models[name])
    with pytest.raises(UserError) as err:
        genzoo.sample(model, "0-1", **{typo: 4})
    message = str(err.value)
    assert typo.replace("_", "-") in message and f"did you mean --{meant}?" in message
    assert "\n" not in message


def test_cli_refuses_a_misspelled_flag(models, capsys):
    code = main(["sample", "--ckpt", str(models["edm"]), "--seeds", "0", "--grid", "x.png", "--stpes", "4"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--stpes" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("name,options", [
    ("edm", {"steps": 2, "sampler": "euler"}),
    ("adm", {"sampler": "adm-ddim", "steps": 2}),
    ("edm2", {"steps": 2}),
    ("consistency", {"steps": 2}),
    ("biggan", {"truncation": 0.5}),
    ("gigagan", {"prompt": ["a blue square"], "truncation": 0.7}),
])
def test_each_family_samples_with_its_own_options(models, name, options):
    model = genzoo.load(models[name])
    images, _, nfe = genzoo.sample(model, "0-1", **options)
    assert images.shape[:2] == (2, 3) and images.dtype == torch.uint8 and nfe >= 1
    kind = get_family(genzoo.record_of(model).family).sample_options_type(model)
    typed = kind.build(options)
    again, _, _ = genzoo.sample(model, "0-1", options=typed)  # the dataclass itself, same images
    assert torch.equal(images, again)


def test_values_are_checked_with_the_flag_named():
    kind = get_family("diffusion").SampleOptions
    with pytest.raises(UserError, match=r"--steps: expected an integer >= 1, got 0"):
        kind.build({"steps": 0})
    with pytest.raises(UserError, match="--sampler: expected one of .*got 'nope'"):
        kind.build({"sampler": "nope"})
    with pytest.raises(UserError, match="--sigma-min 2 --sigma-max 1"):
        kind.build({"sigma_min": 2, "sigma_max": 1})
    assert kind.build({"steps": "7"}).steps == 7  # text from a command line or a widget is parsed


def test_every_option_has_help_and_a_valid_default():
    for name in family_names():
        family = get_family(name)
        for kind in [*family.sample_option_types(), *family.train_option_types()]:
            assert issubclass(kind, Options)
            defaults = kind.build({})  # the defaults pass their own checks
            for spec in kind.specs():
                assert spec.help, (name, spec.name)
                assert defaults[spec.name] == spec.default


def test_sample_help_shows_each_default_once_per_option(capsys):
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "ρ of the EDM time discretisation (default 7.0)" in text
    assert "sampling steps (default 18;" in text
    assert "diffusion sample options" in text and "gan (BigGAN) sample options" in text


def test_published_settings_apply_unless_given(models):
    """A converted model's ``sampling_defaults`` (EDM's published steps) fill what the caller leaves unset."""
    model = genzoo.load(models["edm"])
    genzoo.record_of(model).config["sampling_defaults"] = {"steps": 5, "churn": 1.5}
    family = get_family("diffusion")
    assert (family.sample_options(model, {}).steps, family.sample_options(model, {}).churn) == (5, 1.5)
    assert family.sample_options(model, {"steps": 3}).steps == 3


def test_train_refuses_an_option_of_another_family(tmp_path, capsys):
    with pytest.raises(UserError, match="--precond: not a train option of the gan family"):
        genzoo.train({"family": "gan", "data": "shapes:8", "out": str(tmp_path / "a"), "steps": 1,
                      "precond": "edm"})
    code = main(["train", "--family", "consistency", "--data", "shapes:8", "--out", str(tmp_path / "b"),
                 "--steps", "1", "--g-lr", "1e-3"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--g-lr: not a train option of the consistency family" in err
    assert len(err.splitlines()) == 1


def test_train_checks_a_shared_flag_against_the_familys_choices(tmp_path):
    with pytest.raises(UserError, match="--loss: expected one of .* for the diffusion family, got 'hinge'"):
        genzoo.train({"family": "diffusion", "data": "shapes:8", "out": str(tmp_path / "a"), "steps": 1,
                      "loss": "hinge"})


#: GigaGAN's flags as users have them (issue #17 moved them from argparse to dataclasses): flag -> default
GIGAGAN_TRAIN_FLAGS = {
    "--text-encoder": "learned", "--text-weights": None, "--text-dim": 128, "--text-depth": 2, "--kernels": 4,
    "--w-dim": 128, "--match-weight": 1.0, "--match-negatives": None, "--text-tokenizer": None,
    "--text-lr-mul": None, "--d-head": None, "--d-norm": None, "--d-pool": None, "--d-init": None,
    "--clip-weight": 0.0, "--vision-weight": 0.0, "--clip-negatives": None, "--clip-shift": 0,
    "--clip-model": None, "--clip-pretrain-images": 0, "--r1-interval": 4, "--upsample-scale": 4,
    "--upsampler-text": False, "--upsampler-base": None,
    "--upsampler-latent": None,
    "--degrade": None, "--lpips-weight": None, "--lpips-weights": None, "--l1-weight": 10.0,
}
GIGAGAN_SAMPLE_FLAGS = {"--prompt": None, "--prompt-fine": None, "--style-seed": None, "--mix-layer": None,
                        "--truncation": None}


def test_gigagan_declares_typed_options_with_the_flags_users_have():
    import argparse
    import dataclasses

    from genzoo.gan import gigagan
    from genzoo.train.config import add_train_arguments

    train_kind, sample_kind = gigagan.GigaGANTrainOptions, gigagan.GigaGANSampleOptions
    assert dataclasses.is_dataclass(train_kind) and get_family("gan").train_option_types()[1] is train_kind
    assert get_family("gan").sample_option_types()[1] is sample_kind
    assert {s.flag: s.default for s in train_kind.specs()} == GIGAGAN_TRAIN_FLAGS
    assert {s.flag: s.default for s in sample_kind.specs()} == GIGAGAN_SAMPLE_FLAGS
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    defaults = vars(parser.parse_args([]))
    assert {f: defaults[f[2:].replace("-", "_")] for f in GIGAGAN_TRAIN_FLAGS} == GIGAGAN_TRAIN_FLAGS
    args = parser.parse_args(["--text-tokenizer", "hash", "--degrade", "0.25", "--upsampler-text"])
    assert (args.text_tokenizer, args.degrade, args.upsampler_text) == ("hash", 0.25, True)
    with pytest.raises(UserError, match="--text-dim: expected an integer >= 1, got 0"):
        train_kind.build({"text_dim": 0})
    with pytest.raises(UserError, match=r"--stpes: not an option of the gan \(GigaGAN\) family"):
        sample_kind.build({"stpes": 3})


@pytest.mark.parametrize("name, family, arch", [
    ("edm", "diffusion", "ddpmpp"), ("adm", "diffusion", "adm"), ("edm2", "diffusion", "edm2"),
    ("consistency", "consistency", "ddpmpp"), ("biggan", "gan", "biggan"), ("gigagan", "gan", "gigagan"),
])
def test_every_family_loads_with_its_record_and_no_attributes_from_outside(models, name, family, arch):
    from genzoo.checkpoints import read_json

    model = genzoo.load(models[name])
    record = genzoo.record_of(model)
    assert (record.family, record.arch, record.source, record.source_format) == (family, arch, "model",
                                                                                 "genzoo")
    assert (record.path, record.model_dir, record.weights_file) == (
        models[name], models[name], models[name] / "model.safetensors")
    assert record.config == read_json(models[name] / "config.json")
    assert not [a for a in ("config", "model_dir", "weights_file", "_standing_key") if hasattr(model, a)]


def test_standing_statistics_are_remembered_beside_the_generator(models, monkeypatch):
    """BigGAN's standing statistics are recomputed once per (batches, truncation), kept by the gan family
    rather than on the model."""
    import genzoo.gan.family as gan_family

    calls = []
    real = gan_family.standing_stats
    monkeypatch.setattr(gan_family, "standing_stats", lambda *a, **k: calls.append(a[1:]) or real(*a, **k))
    model = genzoo.load(models["biggan"])
    for _ in range(2):
        genzoo.sample(model, "0-1", standing_stats=1, truncation=0.5)
    assert calls == [(1,)] and gan_family._STANDING[model] == (1, 0.5)
    assert not hasattr(model, "_standing_key")
