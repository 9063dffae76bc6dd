"""EDM2's encoders (uint8 ↔ [−1, 1]; Stable Diffusion VAE latents through a tiny local AutoencoderKL that the
tests save themselves), and official EDM2 snapshots through `genzoo convert`, `genzoo.load` and
`genzoo sample` (latent models decode with --vae)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import genzoo.api
from genzoo.checkpoints import load_official
from genzoo.cli import main
from genzoo.diffusion.encoders import StabilityVAEEncoder, StandardRGBEncoder, build_encoder
from genzoo.errors import UserError
from tests.edm2_reference import TINY, official_state, write_edm2_snapshot


def _diffusers():
    """diffusers, imported only by the tests that need it (its import pulls in torch._dynamo: ~15 s CPU)."""
    return pytest.importorskip("diffusers")


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    """A tiny random AutoencoderKL (4 latent channels, 2× downsampling) saved as a local folder."""
    torch.manual_seed(0)
    vae = _diffusers().AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                                  down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                                  up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
                                  block_out_channels=(8, 8), layers_per_block=1, norm_num_groups=4,
                                  sample_size=16)
    path = tmp_path_factory.mktemp("vae") / "tiny-vae"
    vae.save_pretrained(path)
    return path


def test_standard_rgb_encoder_round_trip():
    enc = StandardRGBEncoder()
    pixels = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    latents = enc.encode(pixels)
    torch.testing.assert_close(latents, pixels.float() / 127.5 - 1, rtol=0, atol=0)
    assert latents.min() == -1 and latents.max() == 1
    assert torch.equal(enc.decode(latents), pixels)
    # out-of-range values clip; (x·127.5 + 128) truncates, i.e. rounds half up
    assert enc.decode(torch.tensor([-2.0, 2.0, 0.0, -1 / 255])).tolist() == [0, 255, 128, 127]
    assert build_encoder(enc.config()).__class__ is StandardRGBEncoder


def test_stability_vae_encoder(vae_dir):
    enc = StabilityVAEEncoder(vae_path=vae_dir)
    raw_mean = np.float32([5.81, 3.25, 0.12, -2.15])
    scale = np.float32(0.5) / np.float32([4.17, 4.62, 3.71, 3.28])
    assert np.array_equal(enc.scale.numpy(), scale)
    assert np.array_equal(enc.bias.numpy(), np.float32(0) - raw_mean * scale)
    vae = _diffusers().AutoencoderKL.from_pretrained(vae_dir, low_cpu_mem_usage=False).eval()
    gen = torch.Generator().manual_seed(1)
    pixels = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8, generator=gen)
    raw = enc.encode_pixels(pixels)
    with torch.no_grad():
        dist = vae.encode(pixels.float() / 255).latent_dist  # the VAE sees pixels in [0, 1]
    torch.testing.assert_close(raw, torch.cat([dist.mean, dist.std], dim=1))
    assert raw.shape == (3, 8, 8, 8)
    noise = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    final = enc.encode_latents(raw, randn_like=lambda t: noise)
    expected = (dist.mean + noise * dist.std) * enc.scale.reshape(1, 4, 1, 1) + enc.bias.reshape(1, 4, 1, 1)
    torch.testing.assert_close(final, expected)
    # decode undoes the whitening exactly, then runs the VAE decoder and quantises [0, 1] to uint8
    unwhitened = (final - enc.bias.reshape(1, 4, 1, 1)) / enc.scale.reshape(1, 4, 1, 1)
    torch.testing.assert_close(unwhitened, dist.mean + noise * dist.std)
    images = enc.decode(final)
    with torch.no_grad():
        direct = vae.decode(unwhitened).sample
    assert images.dtype == torch.uint8 and images.shape == (3, 3, 16, 16)
    assert torch.equal(images, direct.clamp(0, 1).mul(255).to(torch.uint8))
    again = build_encoder(enc.config())
    assert isinstance(again, StabilityVAEEncoder) and again.vae_path == str(vae_dir)
    torch.testing.assert_close(again.encode_latents(raw, randn_like=lambda t: noise), final, rtol=0, atol=0)


def test_vae_errors(tmp_path):
    with pytest.raises(UserError, match="--vae PATH"):
        StabilityVAEEncoder().decode(torch.zeros(1, 4, 8, 8))
    with pytest.raises(UserError, match="AutoencoderKL folder"):
        StabilityVAEEncoder(vae_path=tmp_path).decode(torch.zeros(1, 4, 8, 8))


def _convert(tmp_path, latent, *extra):
    cfg = dict(TINY, img_channels=4 if latent else 3)
    state = official_state(cfg)
    tmp_path.mkdir(parents=True, exist_ok=True)
    pkl = write_edm2_snapshot(tmp_path / "edm2-tiny.pkl", cfg, state, latent=latent)
    out = tmp_path / "converted"
    assert main(["convert", "--from", "edm2", str(pkl), str(out), *extra]) == 0
    return pkl, out


def test_convert_load_and_sample_pixel_model(tmp_path, capsys):
    pkl, out = _convert(tmp_path, latent=False)
    config = json.loads((out / "config.json").read_text())
    assert (config["arch"], config["precond"]) == ("edm2", "edm2")
    assert config["encoder"] == {"name": "standard_rgb"}
    assert config["sampling_defaults"] == {"sampler": "heun", "steps": 32}
    model, official = genzoo.api.load(out), load_official("edm2", pkl)
    x, sigma, labels = torch.randn(2, 3, 8, 8), torch.tensor([0.3, 20.0]), torch.tensor([1, 4])
    with torch.no_grad():
        torch.testing.assert_close(model(x, sigma, labels), official(x, sigma, labels), rtol=0, atol=0)
    npz = tmp_path / "s.npz"
    assert main(["sample", "--ckpt", str(out), "--seeds", "0-2", "--steps", "2", "--out", str(npz)]) == 0
    with np.load(npz) as f:
        assert f["arr_0"].shape == (3, 8, 8, 3) and f["arr_0"].dtype == np.uint8 and f["arr_1"].shape == (3,)
    assert main(["sample", "--ckpt", str(out), "--seeds", "0", "--steps", "2", "--out", str(npz),
                 "--vae", str(tmp_path)]) == 2
    assert "takes no VAE" in capsys.readouterr().err


def test_convert_and_sample_latent_model_with_the_vae(tmp_path, vae_dir, capsys):
    pkl, out = _convert(tmp_path, latent=True)
    config = json.loads((out / "config.json").read_text())
    assert config["encoder"]["name"] == "stability_vae" and "vae_path" not in config["encoder"]
    npz = tmp_path / "s.npz"
    args = ["sample", "--ckpt", str(out), "--seeds", "0-1", "--steps", "2", "--out", str(npz)]
    assert main(args) == 2 and "--vae PATH" in capsys.readouterr().err
    assert main([*args, "--vae", str(vae_dir)]) == 0
    with np.load(npz) as f:
        images = f["arr_0"]
    assert images.shape == (2, 16, 16, 3) and images.dtype == np.uint8  # 8×8 latents, decoded 2× larger
    # the VAE folder recorded at conversion is used without --vae; the same seeds give the same images
    _, out2 = _convert(tmp_path / "b", True, "--vae", str(vae_dir))
    assert json.loads((out2 / "config.json").read_text())["encoder"]["vae_path"] == str(vae_dir)
    npz2 = tmp_path / "s2.npz"
    assert main(["sample", "--ckpt", str(out2), "--seeds", "0-1", "--steps", "2", "--out", str(npz2)]) == 0
    with np.load(npz2) as f:
        assert np.array_equal(f["arr_0"], images)
    # the .pkl itself samples the same (read by the restricted reader, nothing of it runs)
    npz3 = tmp_path / "s3.npz"
    assert main(["sample", "--ckpt", str(pkl), "--seeds", "0-1", "--steps", "2", "--out", str(npz3),
                 "--vae", str(vae_dir)]) == 0
    with np.load(npz3) as f:
        assert np.array_equal(f["arr_0"], images)


def test_reproduce_the_latent_guided_edm2_512_protocol(tmp_path, vae_dir, capsys, monkeypatch):
    """`genzoo reproduce edm2-imagenet512-xxl` end to end on tiny latent EDM2 pickles: the conditional model
    guided (w = 1.2) by an unconditional one, latents decoded by the VAE (the protocol's steps shortened as
    in tests/test_reproduce.py)."""
    from test_reproduce import run_preset

    _, main_dir = _convert(tmp_path / "main", latent=True)
    guide_cfg = dict(TINY, img_channels=4, label_dim=0)
    pkl = write_edm2_snapshot(tmp_path / "guide.pkl", guide_cfg, official_state(guide_cfg, seed=1),
                              latent=True)
    assert main(["convert", "--from", "edm2", str(pkl), str(tmp_path / "guide")]) == 0
    base = ["reproduce", "edm2-imagenet512-xxl", "--ckpt", str(main_dir), "--ref", "shapes:16", "--num", "2",
            "--features", "shapes", "--guide-model", str(tmp_path / "guide"), "--quiet",
            "--out", str(tmp_path / "no-vae")]
    assert main(base) == 2 and "--vae PATH" in capsys.readouterr().err  # nothing recorded: a named error
    record = run_preset("edm2-imagenet512-xxl", main_dir, tmp_path, capsys, monkeypatch,
                        ["--guide-model", str(tmp_path / "guide"), "--vae", str(vae_dir)], resolution=16)
    cost = json.loads((tmp_path / "out" / "samples.cost.json").read_text())
    assert cost["sampler"]["guidance"] == 1.2
    assert record["nfe"] == 2 * (2 * 3 - 1)  # 3 Heun steps = 5 evaluations of each of the two models
