"""A short BigGAN training on shapes through the shared engine, then sampling it (gan family)."""

import json
import math

import pytest
import torch

from genzoo.checkpoints import load_safetensors
from genzoo.family import get_family

TINY_FLAGS = dict(
    family="gan",
    data="shapes:16",
    steps=4,
    batch=8,
    g_ch=2,
    d_ch=2,
    z_dim=6,
    shared_dim=4,
    d_steps=2,
    ema=0.5,
    ema_start=0,
    sample_every=0,
    checkpoint_every=4,
    log_every=1,
    tensorboard=False,
    seed=1,
    ortho_reg=1e-4,
    diffaugment="translation",
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from genzoo.train.engine import train

    out = tmp_path_factory.mktemp("gan") / "run"
    for arch in ("biggan", "biggan-deep"):
        train(
            {
                **TINY_FLAGS,
                "arch": arch,
                "out": str(out / arch),
                **({"g_ch": 4, "d_ch": 2} if arch == "biggan-deep" else {}),
            }
        )
    return out


@pytest.mark.parametrize("arch", ["biggan", "biggan-deep"])
def test_short_training_has_finite_losses_and_an_ema_generator_that_differs(run_dir, arch):
    lines = [json.loads(line) for line in (run_dir / arch / "metrics.jsonl").read_text().splitlines()]
    losses = [v for line in lines for k, v in line.items() if k in ("loss/D", "loss/G", "G/ortho")]
    assert len(losses) >= 8 and all(math.isfinite(v) for v in losses)
    assert any("G/ortho" in line for line in lines)
    ckpt = run_dir / arch / "checkpoint-000004"
    config = json.loads((ckpt / "config.json").read_text())
    assert config["arch"] == arch and config["sampled_player"] == "G" and config["num_classes"] == 16
    raw, ema = load_safetensors(ckpt / "model.safetensors"), load_safetensors(ckpt / "ema.safetensors")
    assert any(k.startswith("D.") for k in raw) and not any(k.startswith("D.") for k in ema)
    differing = [k for k, v in ema.items() if v.is_floating_point() and not torch.equal(v, raw[k])]
    assert any(k.endswith("weight") for k in differing)


def test_sampling_a_trained_run_with_truncation_class_and_standing_stats(run_dir):
    from genzoo.api import load, sample

    model = load(run_dir / "biggan")
    images, labels, nfe = sample(model, "0-5", class_labels=3, batch_size=4, truncation=0.5)
    assert images.shape == (6, 3, 16, 16) and nfe == 1 and labels.tolist() == [3] * 6
    again, _, _ = sample(model, "4-5", class_labels=3, batch_size=1, truncation=0.5)
    assert torch.equal(again, images[4:])  # a seed fixes its image whatever the batch
    before = model.blocks[0][0].bn1.running_mean.clone()
    standing, _, _ = sample(model, "0-5", class_labels=3, batch_size=4, truncation=0.5, standing_stats=2)
    assert not torch.equal(before, model.blocks[0][0].bn1.running_mean)
    assert standing.shape == images.shape


def test_family_flags_and_errors():
    import argparse

    from genzoo.errors import UserError
    from genzoo.gan.family import parse_betas

    family = get_family("gan")
    parser = argparse.ArgumentParser()
    family.add_train_arguments(parser)
    args = parser.parse_args(["--d-steps", "3", "--betas", "0,0.9", "--loss", "ns", "--ortho-reg", "1e-4"])
    assert args.d_steps == 3 and parse_betas(args.betas) == (0.0, 0.9) and args.loss == "ns"
    with pytest.raises(UserError, match="--betas"):
        parse_betas("0.5")
    with pytest.raises(UserError, match="--arch"):
        family.build_model({"arch": "stylegan9", "net": {}})


def test_post_hoc_ema_for_the_generator(run_dir, tmp_path):
    """The engine tracks post-hoc EMA for GANs too (the EMA players: G); the reconstruction samples."""
    from genzoo.api import load, posthoc_ema, sample
    from genzoo.train.phema import list_snapshots

    snaps = list_snapshots(run_dir / "biggan")
    assert [(s.step, s.std) for s in snaps] == [(4, 0.05), (4, 0.1)]
    assert all(p.startswith("G.") for s in snaps for p in s.parameters)
    (model_dir,) = posthoc_ema(run_dir / "biggan", tmp_path / "g", std=0.1)
    tracked = load_safetensors(snaps[1].path)
    rebuilt = load_safetensors(model_dir / "model.safetensors")
    assert all(torch.allclose(rebuilt[k], tracked[k], rtol=0, atol=1e-6) for k in tracked)
    images, _, _ = sample(load(model_dir), "0-1", class_labels=3)
    assert images.shape == (2, 3, 16, 16)
