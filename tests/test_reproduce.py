"""`genzoo reproduce`: every preset's protocol end to end on a tiny stand-in of the released checkpoint's
own kind (an EDM pickle for EDM presets, an EDM2 pickle for EDM2, a guided-diffusion state dict for ADM, ...),
with 2 samples, the shapes feature network in place of Inception and the step counts cut to a few (the
full-length flags are checked separately); and `--list`. The latent EDM2-512 preset, which needs the
diffusers VAE, runs in tests/test_edm2_official.py beside that module's VAE fixture."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from test_biggan_checkpoints import HF_FLAGS, hf_state
from test_convert_adm import CLF_FLAGS, UNET_FLAGS, _flag_args, _random

from genzoo.checkpoints import get_source, load_official, save_model_dir
from genzoo.checkpoints.consistency_models import network_kwargs
from genzoo.cli import build_parser, main
from genzoo.nets.adm import ADMClassifier, ADMUNet
from genzoo.reproduce import PRESETS, Preset
from tests.edm2_reference import TINY, official_state, write_edm2_snapshot
from tests.edm_reference import build_official, to_pickle_objects
from tests.nvlabs_fakes import write_snapshot

CM = dict(image_size=16, num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions="8",
          num_head_channels=16, class_cond=True, num_classes=4, resblock_updown=True)
SONG = dict(model_channels=8, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4], dropout=0.0,
            embedding_type="positional", channel_mult_noise=1, encoder_type="standard",
            resample_filter=[1, 1])
DHARIWAL = dict(model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4], dropout=0.0)
STEPS = 3  # the step budget of the shortened protocols


def stand_in_kind(preset: Preset) -> str:
    """The stand-in directory a preset runs on: the released checkpoint's own format and conditioning."""
    if preset.source_format == "edm":
        if "adm" in preset.checkpoint:
            return "edm-adm"
        return "edm-vp-cond" if preset.conditional else "edm-vp-uncond"
    return {"guided-diffusion": "diffusion", "consistency-models": "consistency", "biggan-hf": "gan",
            "edm2": "edm2"}[preset.source_format]


def shortened(preset: Preset, steps: int = STEPS) -> Preset:
    """The preset with at most ``steps`` sampling steps (``--steps`` / ``--respacing``), a two-step index list
    ``--ts`` rescaled onto the shorter grid; every other setting unchanged. Test-only: no user can shorten
    a protocol this way."""
    flags = dict(zip(preset.flags[::2], preset.flags[1::2]))
    full = int(flags.get("--steps") or flags.get("--respacing") or 0)
    for key in ("--steps", "--respacing"):
        if key in flags:
            flags[key] = str(min(int(flags[key]), steps))
    if "--ts" in flags:
        ts = [round(int(i) * (steps - 1) / (full - 1)) for i in flags["--ts"].split(",")]
        flags["--ts"] = ",".join(map(str, ts))
    return dataclasses.replace(preset, flags=tuple(x for kv in flags.items() for x in kv))


def _edm_pickle(root, name, precond, model_type, label_dim, seed, **kwargs):
    node = build_official(precond, model_type, 8, 3, label_dim=label_dim, seed=seed, **kwargs)
    return write_snapshot(root / f"{name}.pkl", dict(ema=to_pickle_objects(node)))


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    """One tiny converted model per released format (and an ADM classifier), as `genzoo convert` writes
    them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("stand_ins")
    unet = _random(ADMUNet(image_size=16, num_channels=32, num_res_blocks=1, channel_mult="1,2",
                           attention_resolutions="8", num_head_channels=16, learn_sigma=True, class_cond=True,
                           num_classes=4, resblock_updown=True, use_new_attention_order=True), 0)
    clf = _random(ADMClassifier(image_size=16, width=32, depth=1, channel_mult="1,2",
                                attention_resolutions="8", num_head_channels=64, num_classes=4), 1)
    torch.save(unet.state_dict(), root / "unet.pt")
    torch.save(clf.state_dict(), root / "clf.pt")
    assert main(["convert", "--quiet", "--from", "guided-diffusion", str(root / "unet.pt"),
                 str(root / "diffusion"), *_flag_args(UNET_FLAGS)]) == 0
    assert main(["convert", "--quiet", "--from", "guided-diffusion", str(root / "clf.pt"),
                 str(root / "classifier"), *_flag_args(CLF_FLAGS)]) == 0
    cm = _random(ADMUNet(**network_kwargs(CM)), 2)
    source = get_source("consistency-models")
    save_model_dir(root / "consistency", *source.to_genzoo(source.load(cm.state_dict(), **CM), CM))
    torch.save(hf_state(HF_FLAGS, seed=3), root / "pytorch_model.bin")
    gan = load_official("biggan-hf", root / "pytorch_model.bin", **HF_FLAGS)
    save_model_dir(root / "gan", *get_source("biggan-hf").to_genzoo(gan, HF_FLAGS))
    pickles = {
        "edm-vp-cond": _edm_pickle(root, "edm-vp-cond", "VPPrecond", "SongUNet", 4, 4, **SONG),
        "edm-vp-uncond": _edm_pickle(root, "edm-vp-uncond", "VPPrecond", "SongUNet", 0, 5, **SONG),
        "edm-adm": _edm_pickle(root, "edm-adm", "EDMPrecond", "DhariwalUNet", 4, 6, **DHARIWAL),
        "edm2": write_edm2_snapshot(root / "edm2.pkl", TINY, official_state(TINY, seed=7)),
    }
    for kind, pkl in pickles.items():
        fmt = "edm2" if kind == "edm2" else "edm"
        assert main(["convert", "--quiet", "--from", fmt, str(pkl), str(root / kind)]) == 0
    yield root
    torch.set_num_threads(threads)


PIXEL_PRESETS = [name for name, p in PRESETS.items() if not p.latent]


def run_preset(name: str, model, tmp_path, capsys, monkeypatch, extra=(), resolution: int | None = None
               ) -> dict:
    """`genzoo reproduce NAME` on ``model`` (2 samples, shortened steps, a reference at the images'
    ``resolution``, by default the model's); returns the metrics record after checking the printout and
    that every setting of the protocol reached the sampler."""
    preset = shortened(PRESETS[name])
    monkeypatch.setitem(PRESETS, name, preset)
    resolution = resolution or json.loads((model / "config.json").read_text())["resolution"]
    argv = ["reproduce", name, "--ckpt", str(model), "--ref", f"shapes:{resolution}?count=6",
            "--num", "2", "--features", "shapes", "--out", str(tmp_path / "out"), "--quiet", "--batch", "2",
            *extra]
    assert main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert f"{name}: measured shapes FD" in printed and "on 2 samples" in printed
    expected = f"published {preset.published}" if preset.published is not None else "no published number"
    assert expected in printed
    record = json.loads((tmp_path / "out" / "metrics.json").read_text())
    cost = json.loads((tmp_path / "out" / "samples.cost.json").read_text())
    assert record["preset"] == name and record["num_samples"] == 2 and record["fd"] >= 0
    assert record["published"] == preset.published and record["nfe"] == cost["nfe"]
    sampler = cost["sampler"]
    for flag, value in zip(preset.flags[::2], preset.flags[1::2]):  # the protocol's settings reached it
        key = flag.lstrip("-").replace("-", "_")
        assert str(sampler[key]) == value or float(sampler[key]) == float(value), (flag, sampler[key])
    return record


@pytest.mark.parametrize("name", PIXEL_PRESETS)
def test_every_preset_runs_its_protocol_on_a_stand_in(name, stand_ins, tmp_path, capsys, monkeypatch):
    preset = PRESETS[name]
    model = stand_ins / stand_in_kind(preset)
    extra = []
    if preset.needs_classifier:
        argv = ["reproduce", name, "--ckpt", str(model), "--ref", "shapes:16", "--num", "2"]
        assert main(argv) == 2
        assert "--classifier" in capsys.readouterr().err
        extra = ["--classifier", str(stand_ins / "classifier")]
    record = run_preset(name, model, tmp_path, capsys, monkeypatch, extra)
    if preset.family == "consistency":  # "1step" / "2step": that many network evaluations per image
        assert record["nfe"] == int(name[-5])


@pytest.mark.parametrize("name", list(PRESETS))
def test_full_length_protocol_flags_are_sample_flags(name):
    """The unshortened settings parse as `genzoo sample` flags (the run above uses fewer steps)."""
    preset = PRESETS[name]
    args = build_parser().parse_args(["sample", "--ckpt", "m", "--seeds", preset.seeds, "--out", "o.npz",
                                      *preset.flags])
    for flag, value in zip(preset.flags[::2], preset.flags[1::2]):
        parsed = getattr(args, flag.lstrip("-").replace("-", "_"))
        assert str(parsed) == value or float(parsed) == float(value), (flag, parsed)


def test_shortening_keeps_two_step_lists_on_the_grid():
    cd2 = shortened(PRESETS["cm-imagenet64-cd-2step"])
    assert dict(zip(cd2.flags[::2], cd2.flags[1::2])) == {"--steps": "3", "--ts": "0,1,2"}
    adm = shortened(PRESETS["adm-imagenet128-guided"])
    assert dict(zip(adm.flags[::2], adm.flags[1::2]))["--respacing"] == "3"


def test_list_names_files_numbers_and_sources(capsys):
    assert main(["reproduce", "--list"]) == 0
    printed = capsys.readouterr().out
    assert "edm-cifar10-cond-vp" in printed and "FID 1.79" in printed and "FID 1.97" in printed
    assert "64x64_classifier.pt" in printed and "Table" in printed and "reference:" in printed
    assert "edm2-img512-xs-uncond-2147483-0.015.pkl (--guide-model)" in printed and "GPU-hours" in printed
    assert main(["reproduce", "nothing", "--ckpt", "x", "--ref", "y"]) == 2
    assert "unknown preset 'nothing'" in capsys.readouterr().err


@pytest.mark.parametrize("name, kind, message", [
    ("biggan-deep-128", "diffusion", "is a diffusion model; biggan-deep-128 needs a gan model"),
    ("edm2-imagenet64-xl", "diffusion",
     "was converted from guided-diffusion; edm2-imagenet64-xl needs one converted from edm2"),
    ("edm-cifar10-uncond-vp", "edm-vp-cond", "has 4 classes; edm-cifar10-uncond-vp needs an unconditional"),
    ("edm2-imagenet512-xxl", "edm2", "is a pixel-space model; edm2-imagenet512-xxl needs a latent one"),
])
def test_wrong_kind_of_model_is_named(name, kind, message, stand_ins, tmp_path, capsys):
    guide = ["--guide-model", str(stand_ins / kind)] if PRESETS[name].needs_guide else []
    assert main(["reproduce", name, "--ckpt", str(stand_ins / kind), "--ref", "shapes", "--num", "2",
                 "--out", str(tmp_path / "o"), *guide]) == 2
    assert message in capsys.readouterr().err


def test_guide_and_vae_flags_are_checked(stand_ins, capsys):
    base = ["reproduce", "edm2-imagenet512-xxl", "--ckpt", str(stand_ins / "edm2"), "--ref", "shapes"]
    assert main(base) == 2
    assert "--guide-model: edm2-imagenet512-xxl is guided by edm2-img512-xs-uncond" in capsys.readouterr().err
    pixel = ["reproduce", "edm2-imagenet64-xl", "--ckpt", str(stand_ins / "edm2"), "--ref", "shapes"]
    assert main([*pixel, "--guide-model", "g"]) == 2
    assert "--guide-model: edm2-imagenet64-xl takes no guide-model" in capsys.readouterr().err
    assert main([*pixel, "--vae", "v"]) == 2
    assert "--vae: edm2-imagenet64-xl is a pixel-space protocol" in capsys.readouterr().err


def test_classifier_free_guidance_without_a_null_label_is_one_line(stand_ins, tmp_path, capsys):
    """Released ADM checkpoints have no null-label embedding row: --guidance names that, no IndexError."""
    argv = ["sample", "--ckpt", str(stand_ins / "diffusion"), "--seeds", "0-1", "--steps", "2",
            "--guidance", "1.5", "--out", str(tmp_path / "s.npz")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--guidance: classifier-free guidance needs a model trained with a null label" in err
    assert not (tmp_path / "s.npz").exists()
    # an EDM2 (one-hot) model takes the zero row as its null label: the same flag samples
    assert main([*argv[:2], str(stand_ins / "edm2"), *argv[3:]]) == 0
