"""Official consistency-models checkpoints: a tiny state dict in the released layout loads and converts."""

import math

import pytest
import torch

from genzoo.checkpoints import get_source, load_official
from genzoo.checkpoints.consistency_models import PRESETS, network_kwargs
from genzoo.consistency import ConsistencyModel, scalings
from genzoo.errors import UserError
from genzoo.nets.adm import ADMUNet

TINY = dict(image_size=16, num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions="8",
            num_head_channels=16, class_cond=True, num_classes=5, resblock_updown=True)


def _official_state():
    torch.manual_seed(0)
    net = ADMUNet(**network_kwargs(TINY))
    for p in net.parameters():  # the zero-initialised output layers would hide the network
        p.data.normal_(0, 0.05)
    return net, {k: v.clone() for k, v in net.state_dict().items()}


def test_released_layout_loads_as_the_consistency_function():
    net, state = _official_state()
    assert state["middle_block.1.qkv.weight"].shape == (192, 64, 1, 1)  # 1×1 Conv2d, as released
    assert state["middle_block.1.proj_out.weight"].shape == (64, 64, 1, 1)
    f = load_official("consistency-models", state, **{k: str(v) for k, v in TINY.items()})
    assert isinstance(f, ConsistencyModel) and f.sigma_min == 0.002 and f.sigma_max == 80.0
    x, labels = torch.randn(2, 3, 16, 16), torch.tensor([1, 4])
    sigma = torch.tensor([0.7, 20.0])
    c_skip, c_out, c_in = (c.reshape(-1, 1, 1, 1) for c in scalings(sigma))
    expected = c_skip * x + c_out * net(c_in * x, 250 * sigma.log(), labels)  # time input 250·ln σ
    assert torch.allclose(f(x, sigma, labels), expected, atol=1e-5)
    assert torch.equal(f(x, 0.002, labels), x)


def test_convert_round_trip_through_genzoo_load(tmp_path):
    from genzoo.api import load, sample
    from genzoo.checkpoints import save_model_dir

    _, state = _official_state()
    source = get_source("consistency-models")
    module = source.load(state, **TINY)
    config, weights = source.to_genzoo(module, TINY)
    assert config["family"] == "consistency" and config["time_scale"] == 250.0
    save_model_dir(tmp_path / "cm", config, weights)
    model = load(tmp_path / "cm")
    x = torch.randn(1, 3, 16, 16)
    assert torch.allclose(model(x, 3.0, torch.tensor([2])), module(x, 3.0, torch.tensor([2])))
    images, labels, nfe = sample(model, "0-1", class_labels=[3], steps=40, ts="0,20,39")
    assert images.shape == (2, 3, 16, 16) and images.dtype == torch.uint8 and nfe == 2


def test_mismatched_checkpoint_names_the_problem_and_the_fitting_preset():
    _, state = _official_state()
    with pytest.raises(UserError, match="consistency-models checkpoint.*no preset fits"):
        load_official("consistency-models", state, preset="imagenet64")
    with pytest.raises(UserError, match="unknown flag"):
        load_official("consistency-models", state, bogus=1)


def test_presets_match_the_released_configurations():
    with torch.device("meta"):
        imagenet = ADMUNet(**network_kwargs(PRESETS["cd_imagenet64_l2"]))
        lsun = ADMUNet(**network_kwargs(PRESETS["ct_bedroom256"]))
    sd = imagenet.state_dict()
    assert sd["label_emb.weight"].shape == (1000, 768)
    assert len(imagenet.input_blocks) == 1 + 4 * 3 + 3 and len(imagenet.output_blocks) == 4 * 4
    assert sd["input_blocks.0.0.weight"].shape == (192, 3, 3, 3)
    assert sd["out.2.weight"].shape == (3, 192, 3, 3)
    assert any(k.endswith("qkv.weight") and v.ndim == 4 for k, v in sd.items())
    assert lsun.label_dim == 0 and lsun.state_dict()["out.2.weight"].shape == (3, 256, 3, 3)
    assert PRESETS["ct_imagenet64"]["num_scales"] == 201
    n_params = sum(v.numel() for v in imagenet.state_dict().values())
    assert math.isclose(n_params / 1e6, 295.9, rel_tol=0.02)


def test_genzoo_convert_cli_writes_a_consistency_model(tmp_path, capsys):
    from genzoo.api import load
    from genzoo.cli import main

    net, state = _official_state()
    torch.save(state, tmp_path / "cd_tiny.pt")
    flags = [x for k, v in TINY.items() for x in (f"--{k}", str(v))]
    argv = ["convert", "--from", "consistency-models", str(tmp_path / "cd_tiny.pt"), str(tmp_path / "out")]
    assert main([*argv, *flags]) == 0
    assert "family consistency" in capsys.readouterr().out
    model = load(tmp_path / "out")
    x, sigma, labels = torch.randn(1, 3, 16, 16), torch.tensor([5.0]), torch.tensor([0])
    c_skip, c_out, c_in = (c.reshape(-1, 1, 1, 1) for c in scalings(sigma))
    expected = c_skip * x + c_out * net(c_in * x, 250 * sigma.log(), labels)
    assert torch.allclose(model(x, sigma, labels), expected, atol=1e-5)
