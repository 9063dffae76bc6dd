"""Official ADM / iDDPM checkpoints: load_official, presets, mismatch errors, `genzoo convert`, and
sampling converted models with the ADM samplers, the EDM samplers and classifier guidance."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from genzoo.checkpoints import get_source, load_official
from genzoo.checkpoints.guided_diffusion import GUIDED_PRESETS, IMPROVED_PRESETS, split_flags
from genzoo.cli import main
from genzoo.errors import UserError
from genzoo.nets.adm import ADMClassifier, ADMUNet


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# the public flags of a tiny checkpoint, as strings the way a user types them after OUT_DIR
UNET_FLAGS = {
    "image_size": "16",
    "num_channels": "32",
    "num_res_blocks": "1",
    "channel_mult": "1,2",
    "attention_resolutions": "8",
    "num_head_channels": "16",
    "learn_sigma": "True",
    "class_cond": "True",
    "num_classes": "4",
    "resblock_updown": "True",
    "use_new_attention_order": "True",
    "noise_schedule": "linear",
    "diffusion_steps": "1000",
}
CLF_FLAGS = {
    "image_size": "16",
    "classifier_width": "32",
    "classifier_depth": "1",
    "channel_mult": "1,2",
    "classifier_attention_resolutions": "8",
    "num_classes": "4",
}


def _random(module, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return module.eval()


def _flag_args(flags):
    return [item for k, v in flags.items() for item in (f"--{k}", v)]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A tiny guided-diffusion UNet and classifier saved as the public code saves them (a state dict .pt)."""
    root = tmp_path_factory.mktemp("official")
    unet = _random(
        ADMUNet(
            image_size=16,
            num_channels=32,
            num_res_blocks=1,
            channel_mult="1,2",
            attention_resolutions="8",
            num_head_channels=16,
            learn_sigma=True,
            class_cond=True,
            num_classes=4,
            resblock_updown=True,
            use_new_attention_order=True,
        ),
        0,
    )
    clf = _random(
        ADMClassifier(
            image_size=16,
            width=32,
            depth=1,
            channel_mult="1,2",
            attention_resolutions="8",
            num_head_channels=64,
            num_classes=4,
        ),
        1,
    )  # the public classifier: 64 per head
    torch.save(unet.state_dict(), root / "unet.pt")
    torch.save(clf.state_dict(), root / "clf.pt")
    assert (
        main(
            [
                "convert",
                "--from",
                "guided-diffusion",
                str(root / "unet.pt"),
                str(root / "unet"),
                *_flag_args(UNET_FLAGS),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "convert",
                "--from",
                "guided-diffusion",
                str(root / "clf.pt"),
                str(root / "clf"),
                *_flag_args(CLF_FLAGS),
            ]
        )
        == 0
    )
    return root, unet, clf


def test_load_official_has_the_public_forward(checkpoints):
    root, unet, clf = checkpoints
    loaded = load_official("guided-diffusion", root / "unet.pt", **UNET_FLAGS)
    x, t, y = torch.randn(2, 3, 16, 16), torch.tensor([10, 900]), torch.tensor([0, 3])
    torch.testing.assert_close(loaded(x, t, y), unet(x, t, y), rtol=0, atol=0)
    loaded_clf = load_official(
        "guided-diffusion", torch.load(root / "clf.pt", weights_only=True), **CLF_FLAGS
    )
    torch.testing.assert_close(loaded_clf(x, t), clf(x, t), rtol=0, atol=0)


def test_convert_writes_a_genzoo_model_that_reproduces_the_network(checkpoints):
    from genzoo.api import load

    root, unet, _ = checkpoints
    config = json.loads((root / "unet" / "config.json").read_text())
    assert (config["family"], config["arch"], config["precond"]) == ("diffusion", "adm", "iddpm")
    assert config["net"]["num_channels"] == 32 and config["net"]["learn_sigma"] is True
    assert config["discrete"]["noise_schedule"] == "linear" and config["discrete"]["steps"] == 1000
    model = load(root / "unet")
    x, t, y = torch.randn(2, 3, 16, 16), torch.tensor([10, 900]), torch.tensor([0, 3])
    torch.testing.assert_close(model.model(x, t, y), unet(x, t, y), rtol=0, atol=0)
    # as an EDM denoiser: D(x; σ_t) = x − σ_t·ε̂(x/√(1+σ_t²), t)
    sigma = model.diffusion.sigmas()[t].float()
    xs = x * (1 + sigma**2).sqrt().reshape(-1, 1, 1, 1)
    eps = unet(x, t, y)[:, :3]
    torch.testing.assert_close(
        model(xs, sigma, y), xs - sigma.reshape(-1, 1, 1, 1) * eps, rtol=1e-4, atol=1e-4
    )
    clf_config = json.loads((root / "clf" / "config.json").read_text())
    assert (clf_config["family"], clf_config["arch"]) == ("classifier", "adm-classifier")


def test_converted_model_samples_with_adm_and_edm_samplers_batch_independently(checkpoints):
    from genzoo.api import load, sample

    root, _, _ = checkpoints
    model = load(root / "unet")
    a, la, nfe = sample(model, "0-2", class_labels=1, batch_size=3, sampler="adm-ddpm", steps=4)
    b, lb, _ = sample(model, "0-2", class_labels=1, batch_size=2, sampler="adm-ddpm", steps=4)
    assert nfe == 4 and a.shape == (3, 3, 16, 16) and a.dtype == torch.uint8
    assert torch.equal(a, b) and la.tolist() == [1, 1, 1]
    _, _, nfe = sample(model, "0-1", batch_size=2, sampler="adm-ddim", respacing="2,3")
    assert nfe == 5
    _, _, nfe = sample(model, "0-1", batch_size=2, sampler="heun", steps=3)
    assert nfe == 5  # 2N − 1


def test_classifier_guidance_from_the_cli_for_both_sampler_kinds(checkpoints, tmp_path):
    root, _, _ = checkpoints
    out = {}
    for name, extra in {
        "plain": [],
        "zero": ["--classifier-scale", "0"],
        "guided": ["--classifier-scale", "10000"],
    }.items():
        clf = ["--classifier", str(root / "clf")] if extra else []
        path = tmp_path / f"{name}.npz"
        assert (
            main(
                [
                    "sample",
                    "--ckpt",
                    str(root / "unet"),
                    "--seeds",
                    "0-1",
                    "--class",
                    "2",
                    "--sampler",
                    "adm-ddpm",
                    "--steps",
                    "3",
                    "--out",
                    str(path),
                    *clf,
                    *extra,
                ]
            )
            == 0
        )
        out[name] = np.load(path)["arr_0"]
    assert np.array_equal(out["plain"], out["zero"]) and not np.array_equal(out["plain"], out["guided"])
    path = tmp_path / "heun.npz"
    assert (
        main(
            [
                "sample",
                "--ckpt",
                str(root / "unet"),
                "--seeds",
                "0-1",
                "--class",
                "2",
                "--steps",
                "2",
                "--classifier",
                str(root / "clf"),
                "--classifier-scale",
                "3",
                "--out",
                str(path),
            ]
        )
        == 0
    )
    assert np.load(path)["arr_0"].shape == (2, 16, 16, 3)


def test_mismatched_checkpoint_lists_keys_first_shape_and_fitting_preset(checkpoints):
    root, _, _ = checkpoints
    with pytest.raises(UserError) as err:
        load_official("guided-diffusion", root / "unet.pt", **dict(UNET_FLAGS, num_res_blocks="2"))
    assert "missing keys" in str(err.value) and "no preset fits" in str(err.value)
    with pytest.raises(UserError, match=r"first shape mismatch: time_embed.0.weight is \(128, 32\)"):
        load_official("guided-diffusion", root / "unet.pt", **dict(UNET_FLAGS, num_channels="64"))
    # a released CIFAR-10 layout (names and shapes only, on the meta device) loaded with the wrong preset
    from genzoo.checkpoints.guided_diffusion import build_module

    with torch.device("meta"):
        cifar = build_module(*split_flags(IMPROVED_PRESETS["cifar10_uncond_50M_500K"])[:2]).state_dict()
    with pytest.raises(UserError, match="fits --from improved-diffusion --preset cifar10_uncond_50M_500K"):
        load_official("guided-diffusion", cifar, preset="64x64_diffusion")


def test_unknown_preset_and_unsafe_files_are_user_errors(tmp_path, capsys):
    with pytest.raises(UserError, match="valid: .*64x64_diffusion.*lsun_horse_nodropout"):
        load_official("guided-diffusion", {}, preset="64x64")
    path = tmp_path / "evil.pt"
    torch.save({"weights": torch.zeros(1), "code": UserError("not a tensor")}, path)
    assert main(["convert", "--from", "guided-diffusion", str(path), str(tmp_path / "out")]) == 2
    assert "weights-only" in capsys.readouterr().err
    assert main(["convert", "--from", "improved-diffusion", "--list-presets"]) == 0
    assert "cifar10_uncond_50M_500K" in capsys.readouterr().out


def test_presets_carry_the_readme_flags():
    kind, net, rest = split_flags(GUIDED_PRESETS["64x64_diffusion"])
    assert kind == "unet" and net["num_channels"] == 192 and net["num_head_channels"] == 64
    assert (
        net["use_new_attention_order"] and net["dropout"] == 0.1 and net["attention_resolutions"] == "32,16,8"
    )
    assert rest["noise_schedule"] == "cosine" and rest["classifier_scale"] == 1.0
    kind, net, _ = split_flags(GUIDED_PRESETS["128_512_upsampler"])
    assert kind == "sr" and net["image_size"] == 512 and net["small_size"] == 128
    kind, net, _ = split_flags(GUIDED_PRESETS["64x64_classifier"])
    assert kind == "classifier" and net["depth"] == 4 and net["width"] == 128 and net["pool"] == "attention"
    _, net, rest = split_flags(IMPROVED_PRESETS["cifar10_uncond_50M_500K"])
    assert net["dropout"] == 0.3 and rest["diffusion_steps"] == 4000 and rest["rescale_timesteps"] is True
    _, _, rest = split_flags(IMPROVED_PRESETS["imagenet64_cond_270M_250K"])
    assert rest["rescale_timesteps"] is False
    assert get_source("improved-diffusion").presets is IMPROVED_PRESETS


def test_improved_diffusion_models_get_rescaled_timesteps(tmp_path):
    from genzoo.api import load

    net = _random(
        ADMUNet(
            image_size=16,
            num_channels=32,
            num_res_blocks=1,
            channel_mult="1,2",
            attention_resolutions="8",
            num_heads=2,
            learn_sigma=True,
        ),
        2,
    )
    torch.save(net.state_dict(), tmp_path / "iddpm.pt")
    assert (
        main(
            [
                "convert",
                "--from",
                "improved-diffusion",
                str(tmp_path / "iddpm.pt"),
                str(tmp_path / "out"),
                "--image_size",
                "16",
                "--num_channels",
                "32",
                "--num_res_blocks",
                "1",
                "--channel_mult",
                "1,2",
                "--attention_resolutions",
                "8",
                "--num_heads",
                "2",
                "--learn_sigma",
                "True",
                "--diffusion_steps",
                "4000",
                "--noise_schedule",
                "cosine",
            ]
        )
        == 0
    )
    model = load(tmp_path / "out")
    assert model.diffusion.rescale_timesteps and model.diffusion.num_timesteps == 4000
    seen = []
    model.model.register_forward_pre_hook(lambda m, args: seen.append(args[1].clone()))
    model(torch.zeros(1, 3, 16, 16), model.diffusion.sigmas()[2000].float())
    assert seen[0].tolist() == [500.0]  # t·1000/T


def test_super_resolution_checkpoint_upsamples_low_res_base_samples(tmp_path):
    from genzoo.nets.adm import ADMSuperRes

    sr = _random(
        ADMSuperRes(
            image_size=16,
            small_size=8,
            num_channels=32,
            num_res_blocks=1,
            channel_mult="1,2",
            attention_resolutions="8",
            num_heads=4,
            learn_sigma=True,
            class_cond=True,
            num_classes=4,
            resblock_updown=True,
        ),
        3,
    )
    torch.save(sr.state_dict(), tmp_path / "sr.pt")
    flags = [
        "--large_size",
        "16",
        "--small_size",
        "8",
        "--num_channels",
        "32",
        "--num_res_blocks",
        "1",
        "--channel_mult",
        "1,2",
        "--attention_resolutions",
        "8",
        "--learn_sigma",
        "True",
        "--class_cond",
        "True",
        "--num_classes",
        "4",
        "--resblock_updown",
        "True",
    ]
    assert (
        main(["convert", "--from", "guided-diffusion", str(tmp_path / "sr.pt"), str(tmp_path / "sr"), *flags])
        == 0
    )
    config = json.loads((tmp_path / "sr" / "config.json").read_text())
    assert config["arch"] == "adm-sr" and config["net"]["small_size"] == 8 and config["resolution"] == 16
    base = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "base.npz", base, np.array([3, 1, 2]))
    out = tmp_path / "sr.npz"
    args = ["sample", "--ckpt", str(tmp_path / "sr"), "--seeds", "1-2", "--sampler", "adm-ddim"]
    args += ["--steps", "2", "--low-res", str(tmp_path / "base.npz"), "--out", str(out)]
    assert main(args) == 0
    with np.load(out) as written:
        assert written["arr_0"].shape == (2, 16, 16, 3)
        assert written["arr_1"].tolist() == [1, 2]  # the base samples' labels condition and are recorded
    assert main([*args, "--class", "0"]) == 2  # --class would contradict them: a one-line user error
    args = [
        "sample",
        "--ckpt",
        str(tmp_path / "sr"),
        "--seeds",
        "0",
        "--sampler",
        "adm-ddpm",
        "--out",
        str(out),
    ]
    assert main(args) == 2  # no --low-res: a one-line user error


def test_unconditional_model_is_guided_toward_a_class_drawn_per_seed(checkpoints, tmp_path):
    root, _, _ = checkpoints
    net = _random(
        ADMUNet(
            image_size=16,
            num_channels=32,
            num_res_blocks=1,
            channel_mult="1,2",
            attention_resolutions="8",
            num_head_channels=16,
            learn_sigma=True,
            resblock_updown=True,
            use_new_attention_order=True,
        ),
        4,
    )
    torch.save(net.state_dict(), tmp_path / "uncond.pt")
    flags = dict(UNET_FLAGS, class_cond="False")
    flags.pop("num_classes")
    assert (
        main(
            [
                "convert",
                "--from",
                "guided-diffusion",
                str(tmp_path / "uncond.pt"),
                str(tmp_path / "m"),
                *_flag_args(flags),
            ]
        )
        == 0
    )
    out = {}
    for sampler in ("adm-ddpm", "heun"):
        for name, extra in {
            "plain": [],
            "guided": ["--classifier", str(root / "clf"), "--classifier-scale", "10000"],
        }.items():
            path = tmp_path / f"{sampler}-{name}.npz"
            args = [
                "sample",
                "--ckpt",
                str(tmp_path / "m"),
                "--seeds",
                "0-1",
                "--sampler",
                sampler,
                "--steps",
                "2",
            ]
            assert main([*args, "--out", str(path), *extra]) == 0
            out[sampler, name] = np.load(path)["arr_0"]
        assert not np.array_equal(out[sampler, "plain"], out[sampler, "guided"])
