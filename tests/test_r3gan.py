"""R3GAN's backbone (--arch r3gan): shapes, identity residual blocks at initialisation, bilinear
resampling, class conditioning, and a tiny run through the CLI (train, resume, load, sample)."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from genzoo import nets
from genzoo.cli import main
from genzoo.errors import UserError
from genzoo.nets.edm2 import resample
from genzoo.nets.r3gan import BILINEAR, LRELU_GAIN, ResidualBlock

NET = dict(resolution=16, ch=16, num_classes=4)


def _pair(**kw):
    torch.manual_seed(0)
    config = {**NET, **kw}
    return nets.build("r3gan", z_dim=8, **config), nets.build("r3gan-d", **config)


@pytest.mark.parametrize("resolution", [8, 16, 32])
def test_shapes_and_stage_count(resolution):
    G, D = _pair(resolution=resolution)
    stages = int(math.log2(resolution)) - 1  # 4, 8, ..., resolution px
    assert len(G.stages) == len(D.stages) == stages
    x = G(torch.randn(3, 8), torch.tensor([0, 1, 3]))
    assert x.shape == (3, 3, resolution, resolution)
    assert D(x, torch.tensor([0, 1, 3])).shape == (3,)


def test_bad_network_settings_are_user_errors():
    with pytest.raises(UserError, match="power of two"):
        nets.build("r3gan", resolution=12)
    with pytest.raises(UserError, match="3 stage widths"):
        nets.build("r3gan", resolution=16, ch=[8, 8])
    with pytest.raises(UserError, match="groups of 16"):
        nets.build("r3gan", resolution=16, ch=12)
    G, _ = _pair()
    with pytest.raises(UserError, match=r"latents \[N, 8\]"):
        G(torch.randn(2, 9), torch.tensor([0, 1]))


def test_every_residual_block_is_the_identity_at_initialisation():
    """Fix-up style: the branch's last convolution is zero, so x + branch(x) = x exactly; the other two
    are He-initialised with gain √(2/(1+0.2²))·L^(−1/4) (m = 3 layers per branch, L blocks)."""
    G, D = _pair()
    blocks = [m for net in (G, D) for m in net.modules() if isinstance(m, ResidualBlock)]
    assert len(blocks) == 2 * 3 * 2  # two nets, three stages, two blocks each
    x = torch.randn(2, 16, 8, 8, dtype=torch.float64)
    for block in blocks:
        assert torch.equal(block.double()(x), x)
    # the whole generator equals the same generator with its residual blocks removed
    y = torch.tensor([1, 2])
    z = torch.randn(2, 8)
    G = G.float()
    bare = nets.build("r3gan", z_dim=8, **NET)
    bare.load_state_dict(G.state_dict())
    for stage in bare.stages:
        for i in range(len(stage)):
            stage[i] = nn.Identity()
    torch.testing.assert_close(G(z, y), bare(z, y), rtol=0, atol=0)


def test_branch_initialisation_is_variance_scaled():
    torch.manual_seed(0)
    total = 6
    block = ResidualBlock(64, expansion=2, group_channels=16, kernel=3, total_blocks=total)
    gain = LRELU_GAIN * total ** (-1 / 4)
    for conv, fan_in in ((block.expand, 64), (block.spatial, 16 * 9)):
        expected = gain / math.sqrt(fan_in)
        n = conv.weight.numel()  # ≥ 8192 draws: the sample std is within 6 standard errors of 5%
        assert n >= 8192
        assert abs(float(conv.weight.detach().std()) / expected - 1) < 6 / math.sqrt(2 * n) + 1e-3
    assert block.spatial.groups == 128 // 16
    assert not block.project.weight.any()


def test_resampling_is_bilinear_in_the_interior():
    """R3GAN's [1, 2, 1] filter convolved with the box is [1, 3, 3, 1]: upsampling ×2 with it is bilinear
    interpolation (half-pixel centres) away from the zero-padded border."""
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    up = resample(x, BILINEAR, "up")
    ref = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(up[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], rtol=0, atol=1e-12)
    # downsampling averages with the same filter: a linear ramp keeps its slope (×2 per pixel) inside
    ramp = torch.arange(16, dtype=torch.float64).expand(1, 1, 16, 16)
    down = resample(ramp, BILINEAR, "down")[0, 0, 1:-1, 1:-1]
    torch.testing.assert_close(down.diff(dim=1), torch.full_like(down[:, 1:], 2.0), rtol=0, atol=1e-12)


def test_class_conditioning_changes_both_networks_and_accepts_class_vectors():
    G, D = _pair()
    for p in list(G.parameters()) + list(D.parameters()):  # leave the identity start: non-zero branches
        p.data.add_(0.05 * torch.randn_like(p))
    z = torch.randn(4, 8)
    a, b = torch.tensor([0, 0, 0, 0]), torch.tensor([1, 2, 3, 1])
    assert (G(z, a) - G(z, b)).abs().amax(dim=(1, 2, 3)).min() > 1e-4
    x = torch.randn(4, 3, 16, 16)
    assert (D(x, a) - D(x, b)).abs().min() > 1e-6
    onehot = F.one_hot(b, 4).double()
    torch.testing.assert_close(G.double()(z.double(), onehot), G(z.double(), b), rtol=0, atol=1e-12)
    with pytest.raises(UserError, match="class-conditional"):
        G(z.double())
    unconditional = nets.build("r3gan", resolution=16, ch=16, z_dim=8)
    assert unconditional(torch.randn(2, 8)).shape == (2, 3, 16, 16)


TRAIN = ["train", "--family", "gan", "--arch", "r3gan", "--data", "shapes:16", "--batch", "4", "--g-ch", "16",
         "--d-ch", "16", "--z-dim", "8", "--ema", "0.5", "--checkpoint-every", "2", "--sample-every", "0",
         "--log-every", "1", "--no-tensorboard", "--seed", "3"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("r3gan")
    assert main([*TRAIN, "--out", str(root / "straight"), "--steps", "4"]) == 0
    assert main([*TRAIN, "--out", str(root / "resumed"), "--steps", "2"]) == 0
    assert main([*TRAIN, "--out", str(root / "resumed"), "--steps", "4", "--resume"]) == 0
    return root


def test_cli_run_records_r3gans_defaults_and_losses(runs):
    config = json.loads((runs / "straight" / "config.json").read_text())
    assert config["arch"] == "r3gan" and config["loss"] == "rpgan" and config["d_steps"] == 1
    assert config["betas"] in ("0,0.9", [0.0, 0.9]) and config["g_lr"] == config["d_lr"] == 2e-4
    assert config["r1_gamma"] == config["r2_gamma"] == pytest.approx(0.05 * (16 / 32) ** 2, rel=1e-15)
    assert config["net"] == {"resolution": 16, "channels": 3, "num_classes": 16, "ch": 16, "z_dim": 8}
    lines = [json.loads(line) for line in (runs / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(line[k]) for line in lines for k in ("D/loss", "G/loss", "D/r1", "D/r2"))


def test_checkpoint_round_trip_resumes_exactly_and_samples_through_the_cli(runs, tmp_path):
    from genzoo.api import load
    from genzoo.checkpoints import load_safetensors

    a = load_safetensors(runs / "straight" / "checkpoint-000004" / "model.safetensors")
    b = load_safetensors(runs / "resumed" / "checkpoint-000004" / "model.safetensors")
    assert a.keys() == b.keys() and any(k.startswith("D.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    model = load(runs / "straight")
    ema = load_safetensors(runs / "straight" / "checkpoint-000004" / "ema.safetensors")
    assert all(torch.equal(model.state_dict()[k.removeprefix("G.")], v) for k, v in ema.items())
    out = tmp_path / "s.npz"
    assert main(["sample", "--ckpt", str(runs / "straight"), "--seeds", "0-5", "--batch", "4", "--class", "2",
                 "--truncation", "0.7", "--out", str(out)]) == 0
    with np.load(out) as f:
        assert f["arr_0"].shape == (6, 16, 16, 3) and f["arr_0"].dtype == np.uint8
        assert f["arr_1"].tolist() == [2] * 6
    again = tmp_path / "t.npz"
    assert main(["sample", "--ckpt", str(runs / "straight"), "--seeds", "4-5", "--batch", "1", "--class", "2",
                 "--truncation", "0.7", "--out", str(again)]) == 0
    with np.load(out) as f, np.load(again) as g:
        assert np.array_equal(f["arr_0"][4:], g["arr_0"])  # a seed fixes its image whatever the batch


def test_options_r3gan_does_not_take_are_one_line_errors(runs, tmp_path, capsys):
    assert main([*TRAIN, "--out", str(tmp_path / "x"), "--steps", "1", "--shared-dim", "8"]) == 2
    assert "--shared-dim: --arch r3gan does not take it" in capsys.readouterr().err
    assert main([*TRAIN, "--out", str(tmp_path / "y"), "--steps", "1", "--attn-res", "8"]) == 2
    assert "--attn-res" in capsys.readouterr().err
    assert main(["sample", "--ckpt", str(runs / "straight"), "--seeds", "0-1", "--standing-stats", "2",
                 "--out", str(tmp_path / "s.npz")]) == 2
    assert "--standing-stats: R3GAN has no batch norm" in capsys.readouterr().err
