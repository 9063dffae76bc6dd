"""`genzoo reproduce`: every preset's protocol end to end on tiny stand-in checkpoints (2 samples, the
shapes feature network in place of Inception), and `--list`."""

from __future__ import annotations

import json

import pytest
import torch
from test_biggan_checkpoints import HF_FLAGS, hf_state
from test_convert_adm import CLF_FLAGS, UNET_FLAGS, _flag_args, _random

from genzoo.checkpoints import get_source, load_official, save_model_dir
from genzoo.checkpoints.consistency_models import network_kwargs
from genzoo.cli import main
from genzoo.nets.adm import ADMClassifier, ADMUNet
from genzoo.reproduce import PRESETS

CM = dict(image_size=16, num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions="8",
          num_head_channels=16, class_cond=True, num_classes=4, resblock_updown=True)


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    """One tiny converted model per family (and an ADM classifier), as `genzoo convert` writes them."""
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
    yield root
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_runs_its_protocol_on_a_stand_in(name, stand_ins, tmp_path, capsys):
    preset = PRESETS[name]
    resolution = json.loads((stand_ins / preset.family / "config.json").read_text())["resolution"]
    argv = ["reproduce", name, "--ckpt", str(stand_ins / preset.family),
            "--ref", f"shapes:{resolution}?count=6",
            "--num", "2", "--features", "shapes", "--out", str(tmp_path / "out"), "--quiet", "--batch", "2"]
    if preset.needs_classifier:
        assert main(argv) == 2
        assert "--classifier" in capsys.readouterr().err
        argv += ["--classifier", str(stand_ins / "classifier")]
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
    flags = dict(zip(preset.flags[::2], preset.flags[1::2]))
    for flag, value in flags.items():  # the protocol's settings reached the sampler
        key = flag.lstrip("-").replace("-", "_")
        assert str(sampler[key]) == value or float(sampler[key]) == float(value), (flag, sampler[key])


def test_list_names_files_numbers_and_sources(capsys):
    assert main(["reproduce", "--list"]) == 0
    printed = capsys.readouterr().out
    assert "edm-cifar10-cond-vp" in printed and "FID 1.79" in printed and "FID 1.97" in printed
    assert "64x64_classifier.pt" in printed and "Table" in printed and "reference:" in printed
    assert main(["reproduce", "nothing", "--ckpt", "x", "--ref", "y"]) == 2
    assert "unknown preset 'nothing'" in capsys.readouterr().err


def test_wrong_family_is_named(stand_ins, tmp_path, capsys):
    assert main(["reproduce", "biggan-deep-128", "--ckpt", str(stand_ins / "diffusion"), "--ref", "shapes",
                 "--num", "2", "--out", str(tmp_path / "o")]) == 2
    assert "is a diffusion model; biggan-deep-128 needs a gan model" in capsys.readouterr().err
