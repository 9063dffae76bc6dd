"""The ddpmpp UNet and the diffusion family: objective, model rebuild, sampling from options."""

from types import SimpleNamespace

import pytest
import torch

import genzoo.api
from genzoo import nets
from genzoo.checkpoints import save_model_dir
from genzoo.diffusion.family import FAMILY, SAMPLERS
from genzoo.errors import UserError
from genzoo.seeds import StackedRandomGenerator
from genzoo.train.objective import Batch

EDM_SAMPLERS = ("heun", "euler", "ddim", "ddpm", "dpmpp2m")
TINY = dict(model_channels=8, num_blocks=1, channel_mult="1,2", attn_res="4")


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny networks: thread hand-offs cost more than the arithmetic on a busy machine.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def tiny_net(**kw):
    args = dict(resolution=8, in_channels=3, label_dim=4, model_channels=8, channel_mult=(1, 2), num_blocks=1,
                attn_resolutions=(4,), channels_per_head=8)
    return nets.build("ddpmpp", **{**args, **kw})


def randomize(module):
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return module


def test_unet_shapes_and_conditioning():
    net = tiny_net(out_channels=6, augment_dim=9)
    x, t = torch.randn(3, 3, 8, 8), torch.tensor([0.1, -0.3, 0.5])
    assert torch.equal(net(x, t), torch.zeros(3, 6, 8, 8))  # zero-initialised output layer
    randomize(net)
    y = torch.tensor([0, 1, 3])
    out = net(x, t, y)
    assert out.shape == (3, 6, 8, 8)
    assert not torch.allclose(out, net(x, t, torch.tensor([2, 2, 2])))
    assert not torch.allclose(out, net(x, t, y, augment_labels=torch.ones(3, 9)))
    null = torch.full((3,), 4)
    torch.testing.assert_close(net(x, t), net(x, t, null))
    torch.testing.assert_close(net(x, t, torch.tensor([-1, -1, -1])), net(x, t, null))
    # a scalar noise label broadcasts
    torch.testing.assert_close(net(x, torch.tensor([0.2])), net(x, torch.full((3,), 0.2)))


def test_adaptive_scale_block_is_adm_scale_shift_norm():
    """adaptive_scale: h = SiLU(GN(conv0(...))·(1 + s) + b) with (s, b) = Linear(emb), as in ADM."""
    import math

    import torch.nn.functional as F

    from genzoo.nets.unet import ResBlock

    torch.manual_seed(0)
    block = randomize(ResBlock(8, 8, emb_ch=6, adaptive_scale=True))
    assert block.affine.out_features == 16 and ResBlock(8, 8, emb_ch=6).affine.out_features == 8
    x, emb = torch.randn(2, 8, 4, 4), torch.randn(2, 6)
    scale, shift = block.affine(emb)[:, :, None, None].chunk(2, dim=1)
    h = block.conv0(F.silu(block.norm0(x)))
    h = F.silu(block.norm1(h) * (1 + scale) + shift)
    expected = (block.conv1(h) + x) * math.sqrt(0.5)
    torch.testing.assert_close(block(x, emb), expected)
    # the flag reaches the network from the train config
    config, obj = objective(adaptive_scale=True)
    assert config["net"]["adaptive_scale"] is True
    first = obj.players["net"].model.encoder[0]
    assert first.adaptive_scale and first.affine.out_features == 2 * first.conv0.out_channels


def test_edm_loss_noise_distribution_flags():
    _, obj = objective()
    assert (obj.loss_fn.P_mean, obj.loss_fn.P_std) == (-1.2, 1.2)
    _, obj = objective(p_mean=-0.4, p_std=1.0)
    assert (obj.loss_fn.P_mean, obj.loss_fn.P_std) == (-0.4, 1.0)
    torch.manual_seed(0)
    log_sigma = obj.loss_fn.sample_sigma(20000, torch.device("cpu")).log()
    assert abs(float(log_sigma.mean()) + 0.4) < 0.03 and abs(float(log_sigma.std()) - 1.0) < 0.03


def dataset():
    return SimpleNamespace(resolution=8, num_channels=3, num_classes=4)


def objective(**extra):
    config = {"family": "diffusion", **TINY, **extra}
    return config, FAMILY.build_objective(config, dataset())


@pytest.mark.parametrize("precond", ["edm", "vp", "ve", "iddpm"])
def test_objective_trains_and_the_model_rebuilds(precond):
    config, obj = objective(precond=precond, augment=0.5)
    assert config["arch"] == "ddpmpp" and config["precond"] == precond and config["net"]["augment_dim"] == 9
    assert config["label_dropout"] == 0.1 and obj.ema_players == ("net",) and obj.sampled_player == "net"
    batch = Batch(images=torch.rand(4, 3, 8, 8) * 2 - 1, labels=torch.tensor([0, 1, -1, 3]),
                  rng=StackedRandomGenerator("cpu", range(4)))
    result = obj.loss("net", batch, 0)
    assert result.loss.ndim == 0 and torch.isfinite(result.loss)
    result.loss.backward()
    assert all(p.grad is not None for p in obj.players["net"].parameters() if p.requires_grad)
    model = FAMILY.build_model(config)
    model.load_state_dict(obj.players["net"].state_dict(), strict=True)
    assert type(model) is type(obj.players["net"])


@pytest.mark.parametrize("arch", ["songunet", "dhariwalunet"])
def test_edm_networks_train_rebuild_and_take_both_label_forms(arch):
    config, obj = objective(arch=arch, precond="edm", augment=0.5)
    assert config["net"]["img_resolution"] == 8 and config["net"]["augment_dim"] == 9
    batch = Batch(images=torch.rand(4, 3, 8, 8) * 2 - 1, labels=torch.tensor([0, 1, -1, 3]),
                  rng=StackedRandomGenerator("cpu", range(4)))
    result = obj.loss("net", batch, 0)
    result.loss.backward()
    assert torch.isfinite(result.loss) and all(p.grad is not None for p in obj.players["net"].parameters())
    model = randomize(FAMILY.build_model(config)).eval()
    labels = torch.tensor([0, 3, 4])  # 4 = the null label: EDM's zero row
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        by_index = model(x, torch.tensor([0.1, 1.0, 10.0]), labels)
        rows = torch.nn.functional.one_hot(labels, 5)[:, :4].float()
        assert torch.equal(model(x, torch.tensor([0.1, 1.0, 10.0]), rows), by_index)
    with pytest.raises(UserError, match="--adaptive-scale"):
        objective(arch=arch, adaptive_scale=True)


def test_ddpmpp_denoiser_takes_one_hot_rows_too():
    config, _ = objective()
    model = randomize(FAMILY.build_model(config)).eval()
    labels = torch.tensor([2, 4, 0])
    rows = torch.nn.functional.one_hot(labels, 5)[:, :4].float()  # index 4 (null) -> the zero row
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x, 2.0, rows), model(x, 2.0, labels))
        assert not torch.equal(model(x, 2.0, labels), model(x, 2.0, torch.tensor([1, 4, 0])))


def test_uncond_flag_and_bad_precond():
    config, obj = objective(uncond=True)
    assert config["net"]["label_dim"] == 0 and config["label_dropout"] == 0.0
    with pytest.raises(UserError, match="--precond"):
        objective(precond="foo")


def test_sample_defaults_seeds_and_options(tmp_path):
    config, obj = objective()
    randomize(obj.players["net"])
    config.update(resolution=8, channels=3, num_classes=4, sampled_player="net")
    sd = {f"net.{k}": v for k, v in obj.players["net"].state_dict().items()}
    save_model_dir(tmp_path / "m", config, {"model": sd})
    model = genzoo.api.load(tmp_path / "m")
    labels = torch.tensor([0, 1, 2])
    images, nfe = FAMILY.sample(model, StackedRandomGenerator("cpu", [5, 6, 7]), labels, {})
    assert images.shape == (3, 3, 8, 8) and nfe == 35 and images.abs().max() <= 1
    opts = {"sampler": "heun", "steps": 4, "churn": 40, "s_max": 50}
    together, nfe = FAMILY.sample(model, StackedRandomGenerator("cpu", [5, 6, 7]), labels, opts)
    alone = torch.cat([FAMILY.sample(model, StackedRandomGenerator("cpu", [s]), labels[i:i + 1], opts)[0]
                       for i, s in enumerate([5, 6, 7])])
    assert nfe == 7
    # float32 convolutions round differently per batch size (and with the kernels torch picked
    # earlier); 3e-5 is far below one uint8 level of the saved image (2/255).
    torch.testing.assert_close(together, alone, rtol=0, atol=3e-5)
    assert set(EDM_SAMPLERS) <= set(SAMPLERS)
    for name in EDM_SAMPLERS:
        out, nfe = FAMILY.sample(model, StackedRandomGenerator("cpu", [1]), labels[:1],
                                 {"sampler": name, "steps": 3, "guidance": 2.0})
        # classifier-free guidance evaluates every step on two labels: 2 x (3 or 5) evaluations
        assert out.shape == (1, 3, 8, 8) and torch.isfinite(out).all() and nfe in (6, 10)
    out, nfe = FAMILY.sample(model, StackedRandomGenerator("cpu", [1]), labels[:1],
                             {"steps": 3, "discretization": "vp", "schedule": "vp", "scaling": "vp"})
    assert nfe == 5 and torch.isfinite(out).all()
    with pytest.raises(UserError, match="--sampler"):
        FAMILY.sample(model, StackedRandomGenerator("cpu", [1]), labels[:1], {"sampler": "nope"})
    images, labels_out, nfe = genzoo.api.sample(model, "0-2", batch_size=2, steps=2, sampler="euler")
    assert images.dtype == torch.uint8 and images.shape == (3, 3, 8, 8) and nfe == 2
