"""Training ADM models: the classifier family (noise-aware classifier) and `--arch adm --precond iddpm
--loss hybrid` in the diffusion family; ADM networks inside the EDM preconditionings."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from genzoo.diffusion.discrete_denoiser import DiscreteDenoiser
from genzoo.diffusion.precond import build_denoiser
from genzoo.errors import UserError
from genzoo.family import get_family
from genzoo.nets.adm import ADMUNet
from genzoo.seeds import StackedRandomGenerator
from genzoo.train.objective import Batch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


DATA = SimpleNamespace(resolution=8, num_channels=3, num_classes=3)


def _batch(seeds=(0, 1, 2, 3)):
    gen = torch.Generator().manual_seed(7)
    return Batch(
        images=torch.rand(len(seeds), 3, 8, 8, generator=gen) * 2 - 1,
        labels=torch.tensor([0, 1, 2, 1]),
        rng=StackedRandomGenerator("cpu", seeds),
    )


def test_classifier_objective_is_cross_entropy_on_noised_images():
    family = get_family("classifier")
    config = {"classifier_width": 32, "classifier_depth": 1, "classifier_attention_resolutions": "4"}
    objective = family.build_objective(config, DATA)
    assert config["arch"] == "adm-classifier" and config["discrete"]["noise_schedule"] == "linear"
    assert config["net"]["num_classes"] == 3 and config["net"]["image_size"] == 8
    batch = _batch()
    result = objective.loss("net", batch, step=0)
    # the same draws: t uniform over the steps, then ε, from each item's own generator
    rng = StackedRandomGenerator("cpu", [0, 1, 2, 3])
    t, noise = rng.randint(0, 1000, [4]), rng.randn_like(batch.images)
    diffusion = objective.diffusion
    x_t = diffusion.q_sample(batch.images, t, noise)
    expected = F.cross_entropy(objective.players["net"](x_t, t), batch.labels)
    torch.testing.assert_close(result.loss, expected)
    result.loss.backward()
    assert all(p.grad is not None for p in objective.players["net"].parameters() if p.requires_grad)
    model = family.build_model(config)
    assert model.state_dict().keys() == objective.players["net"].state_dict().keys()
    with pytest.raises(UserError, match="classifier does not generate"):
        family.sample(model, StackedRandomGenerator("cpu", [0]), None, {})
    with pytest.raises(UserError, match="at least 2 classes"):
        family.build_objective({}, SimpleNamespace(resolution=8, num_channels=3, num_classes=0))


def test_adm_hybrid_training_in_the_diffusion_family():
    family = get_family("diffusion")
    config = {
        "arch": "adm",
        "precond": "iddpm",
        "loss": "hybrid",
        "model_channels": 32,
        "num_blocks": 1,
        "diffusion_steps": 100,
    }
    objective = family.build_objective(config, DATA)
    denoiser = objective.players["net"]
    assert isinstance(denoiser, DiscreteDenoiser) and denoiser.diffusion.num_timesteps == 100
    assert (
        config["net"]["learn_sigma"]
        and config["net"]["null_label"]
        and config["discrete"]["loss"] == "hybrid"
    )
    assert (
        denoiser.model.label_emb.weight.shape[0] == 4
    )  # 3 classes + the classifier-free-guidance null label
    batch = _batch()
    batch.labels = torch.tensor([0, 1, 2, 0])
    objective.label_dropout = 0.0
    result = objective.loss("net", batch, step=0)
    rng = StackedRandomGenerator("cpu", [0, 1, 2, 3])
    t, noise = rng.randint(0, 100, [4]), rng.randn_like(batch.images)
    terms = denoiser.diffusion.training_losses(denoiser.model, batch.images, t, noise, batch.labels)
    assert "vb" in terms
    torch.testing.assert_close(result.loss, terms["loss"].mean())
    model = family.build_model(config)
    assert model.state_dict().keys() == denoiser.state_dict().keys()
    with pytest.raises(UserError, match="--precond iddpm"):
        bad = family.build_objective(
            {"arch": "adm", "precond": "edm", "loss": "hybrid", "model_channels": 32, "num_blocks": 1}, DATA
        )
        bad.loss("net", _batch(), step=0)


@pytest.mark.parametrize("precond", ["iddpm", "edm", "vp"])
def test_adm_unet_runs_inside_every_edm_preconditioning(precond):
    net = ADMUNet(
        image_size=8,
        num_channels=32,
        num_res_blocks=1,
        channel_mult="1,2",
        attention_resolutions="4",
        num_heads=1,
        learn_sigma=True,
    )
    denoiser = build_denoiser(precond, net)
    x, sigma = torch.randn(2, 3, 8, 8), torch.tensor([0.5, 10.0])
    out = denoiser(x, sigma)
    assert out.shape == (2, 3, 8, 8)
    if precond == "iddpm":  # zero-initialised output conv: ε̂ = 0, so D(x) = x (c_skip = 1)
        torch.testing.assert_close(out, x)


def test_loss_second_moment_sampler_follows_the_root_mean_square_loss():
    from genzoo.diffusion.discrete import LossSecondMomentSampler

    sampler = LossSecondMomentSampler(4, history=2, uniform_prob=0.001)
    assert np.allclose(sampler.probabilities(), 0.25)  # uniform until every step has its history
    for _ in range(3):  # the first entries are pushed out of the 2-entry history
        sampler.update(torch.tensor([0, 1, 2, 3]), torch.tensor([9.0, 9.0, 9.0, 9.0]))
    sampler.update(torch.tensor([0, 1, 2, 3]), torch.tensor([1.0, 2.0, 3.0, 4.0]))
    rms = np.sqrt(np.array([(81 + 1) / 2, (81 + 4) / 2, (81 + 9) / 2, (81 + 16) / 2]))
    expected = rms / rms.sum() * 0.999 + 0.001 / 4
    np.testing.assert_allclose(sampler.probabilities(), expected)
    t, w = sampler.sample(4000, torch.device("cpu"), StackedRandomGenerator("cpu", range(4000)))
    np.testing.assert_allclose(np.bincount(t.numpy(), minlength=4) / 4000, expected, atol=0.02)
    # E_p[w·L] = mean_t L_t
    np.testing.assert_allclose(w.numpy(), 1 / (4 * expected[t.numpy()]), rtol=8 * np.finfo(np.float32).eps)


def test_vlb_loss_trains_learned_variances_with_importance_sampling():
    family = get_family("diffusion")
    config = {
        "arch": "adm",
        "precond": "iddpm",
        "loss": "vlb",
        "model_channels": 32,
        "num_blocks": 1,
        "diffusion_steps": 50,
        "uncond": True,
    }
    objective = family.build_objective(config, DATA)
    assert config["discrete"]["loss"] == "kl" and config["net"]["learn_sigma"]
    batch = _batch()
    result = objective.loss("net", batch, step=0)
    rng = StackedRandomGenerator("cpu", [0, 1, 2, 3])
    t = (rng.rand([4]) * 50).long()  # uniform before the sampler has its history
    denoiser = objective.players["net"]
    terms = denoiser.diffusion.training_losses(denoiser.model, batch.images, t, rng.randn_like(batch.images))
    torch.testing.assert_close(result.loss, terms["loss"].mean())
    assert (objective.loss_fn.sampler.counts[t.numpy()] > 0).all()
