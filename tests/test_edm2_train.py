"""`genzoo train --family diffusion --arch edm2`: the EDM2 loss with the learned uncertainty, the EDM2 noise
distribution, the inverse square-root learning-rate schedule in the engine, and the run's model rebuilt
by genzoo.load."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from test_train_toy import ToyDataset

import genzoo.api
from genzoo.diffusion.family import FAMILY
from genzoo.diffusion.losses import EDM2Loss
from genzoo.diffusion.precond import EDM2Denoiser
from genzoo.errors import UserError
from genzoo.seeds import StackedRandomGenerator
from genzoo.train.engine import train
from genzoo.train.objective import Batch, learning_rate

TINY = dict(model_channels=8, num_blocks=1, channel_mult="1,2", attn_res="4")
DATA = SimpleNamespace(resolution=8, num_channels=3, num_classes=4)


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


class Stub(nn.Module):
    """A denoiser with a known D and u(σ) that remembers what it was given."""

    def forward(self, x, sigma, class_labels=None, return_logvar=False):
        self.seen = (x.clone(), sigma.clone(), class_labels)
        denoised, logvar = 0.5 * torch.tanh(x), (0.3 * sigma.log() - 0.1).reshape(-1, 1, 1, 1)
        return (denoised, logvar) if return_logvar else denoised


def test_edm2_loss_is_the_uncertainty_weighted_error():
    images = torch.rand(5, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    net, labels = Stub(), torch.tensor([0, 1, 2, 3, 0])
    rng = StackedRandomGenerator("cpu", range(5))
    loss = EDM2Loss(P_mean=-0.8, P_std=1.6)(net, images, labels, None, rng)
    noisy, sigma, seen_labels = net.seen
    assert torch.equal(seen_labels, labels) and sigma.shape == (5,)
    s = sigma.double().reshape(-1, 1, 1, 1)
    weight = (s ** 2 + 0.25) / (s * 0.5) ** 2  # (σ² + σ_d²)/(σ·σ_d)²
    logvar = 0.3 * s.log() - 0.1
    expected = weight / logvar.exp() * (0.5 * torch.tanh(noisy.double()) - images.double()) ** 2 + logvar
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)
    # the per-image noise is σ times the image's own normal draws: independent of the batch split
    alone = EDM2Loss(P_mean=-0.8, P_std=1.6)(net, images[3:4], labels[3:4], None,
                                             StackedRandomGenerator("cpu", [3]))
    torch.testing.assert_close(alone, loss[3:4])
    with pytest.raises(UserError, match="augment"):
        EDM2Loss().per_element(net, noisy, sigma, images, None, {"augment_labels": torch.zeros(5, 9)})


def test_edm2_noise_distribution():
    loss = EDM2Loss()
    assert (loss.P_mean, loss.P_std, loss.sigma_data) == (-0.4, 1.0, 0.5)  # the official class defaults
    n = 40000
    torch.manual_seed(0)
    log_sigma = EDM2Loss(P_mean=-0.8, P_std=1.6).sample_sigma(n, torch.device("cpu")).double().log()
    assert abs(float(log_sigma.mean()) + 0.8) < 6 * 1.6 / math.sqrt(n)
    assert abs(float(log_sigma.std()) - 1.6) < 6 * 1.6 / math.sqrt(2 * n)


def test_family_defaults_and_refusals():
    config = {"arch": "edm2", **TINY}
    objective = FAMILY.build_objective(config, DATA)
    assert (config["precond"], config["loss"], config["lr"]) == ("edm2", "edm2", 0.01)
    assert (config["p_mean"], config["p_std"], config["decay_kimg"]) == (-0.8, 1.6, 35_000 * 2048 / 1000)
    assert isinstance(objective.players["net"], EDM2Denoiser) and config["net"]["label_dim"] == 4
    spec = objective.optimizer_specs()["net"]
    assert spec.betas == (0.9, 0.99) and spec.decay_images == 35_000 * 2048
    assert isinstance(objective.loss_fn, EDM2Loss) and objective.loss_fn.P_mean == -0.8
    config = {"arch": "edm2", "lr_ref": 0.02, "decay_kimg": 5, "p_mean": -0.4, "p_std": 1.0, **TINY}
    objective = FAMILY.build_objective(config, DATA)
    assert (config["lr"], objective.optimizer_specs()["net"].decay_images) == (0.02, 5000)
    assert (objective.loss_fn.P_mean, objective.loss_fn.P_std) == (-0.4, 1.0)
    # the EDM recipe is untouched: no decay, β₂ 0.999
    config = {**TINY}
    spec = FAMILY.build_objective(config, DATA).optimizer_specs()["net"]
    assert (spec.decay_images, spec.betas, config["lr"]) == (0.0, (0.9, 0.999), 1e-3)
    for bad, message in [(dict(lr=0.01, lr_ref=0.02), "--lr-ref"), (dict(augment=0.1), "--augment"),
                         (dict(precond="edm", loss="edm2"), "--precond edm2"),
                         (dict(decay_kimg=-1), "decay")]:
        with pytest.raises(UserError, match=message):
            FAMILY.build_objective({"arch": "edm2", **TINY, **bad}, DATA)


def test_learning_rate_schedule_closed_form():
    ref, t_ref, warmup = 0.01, 70_000 * 2048, 10e6
    for t in [0, 1e3, 5e6, 10e6, 2e7, t_ref, 4 * t_ref, 1e10]:
        expected = ref / math.sqrt(max(t / t_ref, 1)) * min(t / warmup, 1)
        assert math.isclose(learning_rate(ref, t, warmup, t_ref), expected, rel_tol=1e-12)
    assert learning_rate(ref, 4 * t_ref, 0, t_ref) == ref / 2
    assert learning_rate(ref, 1e9, 0, 0) == ref  # no decay, no ramp-up


def test_engine_applies_the_schedule_and_the_run_reloads(tmp_path):
    data = ToyDataset(count=16, resolution=8, num_classes=4)
    config = dict(family="diffusion", arch="edm2", data="toy", out=str(tmp_path / "run"), steps=5, batch=4,
                  lr_ref=0.02, decay_kimg=0.008, lr_warmup_kimg=0.012, log_every=1, sample_every=0,
                  checkpoint_every=5, seed=1, **TINY)
    run = train(config, dataset=data)
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3, 4, 5]
    for line in lines:
        t = 4 * (line["step"] - 1)  # images seen before the update
        expected = 0.02 * min(t / 12, 1) / math.sqrt(max(t / 8, 1))
        assert math.isclose(line["lr/net"], expected, rel_tol=1e-9, abs_tol=1e-15), line
    saved = json.loads((run / "config.json").read_text())
    assert (saved["arch"], saved["precond"], saved["loss"]) == ("edm2", "edm2", "edm2")
    assert saved["decay_kimg"] == 0.008
    model = genzoo.api.load(run)
    assert isinstance(model, EDM2Denoiser) and not model.training
    from safetensors.torch import load_file

    ema = load_file(str(run / "checkpoint-000005" / "ema.safetensors"))
    state = model.state_dict()
    assert set(state) == {k.removeprefix("net.") for k in ema}
    assert all(torch.equal(state[k.removeprefix("net.")], v) for k, v in ema.items())
    images, labels, nfe = genzoo.api.sample(model, [0, 1], steps=2)
    assert images.shape == (2, 3, 8, 8) and labels.shape == (2,) and nfe == 3


def test_a_few_steps_lower_the_loss():
    config = {"arch": "edm2", **TINY}
    objective = FAMILY.build_objective(config, DATA)
    gen = torch.Generator().manual_seed(3)
    images = (torch.rand(4, 3, 8, 8, generator=gen) > 0.5).float() * 2 - 1
    labels = torch.randint(0, 4, (4,), generator=gen)

    def loss(seed0):
        rng = StackedRandomGenerator("cpu", range(seed0, seed0 + len(images)))
        batch = Batch(images=images, labels=labels, rng=rng)
        return objective.loss("net", batch, 0).loss

    with torch.no_grad():
        before = float(sum(loss(1000 * k) for k in range(4))) / 4
    spec = objective.optimizer_specs()["net"]
    opt = torch.optim.Adam(objective.players["net"].parameters(), lr=spec.lr, betas=spec.betas)
    objective.train()
    for step in range(15):
        opt.zero_grad()
        loss(10 + 4 * step).backward()
        opt.step()
    with torch.no_grad():
        after = float(sum(loss(1000 * k) for k in range(4))) / 4
    assert after < before - 0.2, (before, after)
