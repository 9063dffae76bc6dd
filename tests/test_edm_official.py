"""Official EDM snapshots: genzoo's rebuilt denoisers equal the official forward (written down in
tests/edm_reference.py from the documented structure), for every network type and preconditioning."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from genzoo.checkpoints import get_source, load_official
from genzoo.checkpoints.record import official_import
from genzoo.cli import main
from genzoo.diffusion.samplers import edm_sampler
from genzoo.errors import UserError
from tests.edm_reference import build_official, official_denoise, to_pickle_objects
from tests.nvlabs_fakes import EasyDict, FakePersistent, write_snapshot


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SONG = dict(model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4], dropout=0.1)
DDPMPP = dict(
    SONG, embedding_type="positional", channel_mult_noise=1, encoder_type="standard", resample_filter=[1, 1]
)
NCSNPP = dict(
    SONG,
    embedding_type="fourier",
    channel_mult_noise=2,
    encoder_type="residual",
    resample_filter=[1, 3, 3, 1],
)
SKIP = dict(SONG, encoder_type="skip", decoder_type="skip", channel_mult=[1, 2, 2])
ADM = dict(model_channels=32, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4], dropout=0.1)

CASES = {
    "ddpmpp-vp": ("VPPrecond", "SongUNet", DDPMPP, 3),
    "ddpmpp-edm-uncond": ("EDMPrecond", "SongUNet", DDPMPP, 0),
    "ncsnpp-ve": ("VEPrecond", "SongUNet", NCSNPP, 3),
    "song-skip-iddpm": ("iDDPMPrecond", "SongUNet", SKIP, 0),
    "adm-edm": ("EDMPrecond", "DhariwalUNet", ADM, 5),
    "adm-iddpm": ("iDDPMPrecond", "DhariwalUNet", ADM, 5),
    "adm-vp-augment": ("VPPrecond", "DhariwalUNet", dict(ADM, augment_dim=9), 0),
}
SIGMAS = torch.tensor([0.002, 0.03, 0.5, 4.0, 80.0])
RESOLUTION = 8


def snapshot(tmp_path, case, **extra):
    precond, model_type, kwargs, label_dim = CASES[case]
    node = build_official(
        precond, model_type, RESOLUTION, 3, label_dim=label_dim, seed=len(case), **{**kwargs, **extra}
    )
    data = dict(
        ema=to_pickle_objects(node),
        loss_fn=FakePersistent("EDMLoss", dict(P_mean=-1.2, P_std=1.2)),
        augment_pipe=None,
        dataset_kwargs=EasyDict(resolution=RESOLUTION, max_size=50000),
    )
    return node, write_snapshot(tmp_path / f"{case}.pkl", data)


def _inputs(label_dim, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(SIGMAS), 3, RESOLUTION, RESOLUTION, generator=g) * (1 + SIGMAS.reshape(-1, 1, 1, 1))
    index = torch.randint(label_dim or 1, (len(SIGMAS),), generator=g)
    return x, index


def _rel(a, b):
    """max |a − b| / max |b| per image (float32 forward: a few hundred ops of 2^-24 rounding each)."""
    return ((a - b).abs().flatten(1).amax(1) / b.abs().flatten(1).amax(1)).max().item()


@pytest.mark.parametrize("case", list(CASES))
def test_rebuilt_denoiser_equals_the_official_forward(tmp_path, case):
    node, path = snapshot(tmp_path, case)
    model = load_official("edm", path)
    label_dim = CASES[case][3]
    x, index = _inputs(label_dim)
    one_hot = F.one_hot(index, label_dim).float() if label_dim else None
    augment = torch.randn(len(SIGMAS), 9) if "augment" in case else None
    cond = {"augment_labels": augment} if augment is not None else {}
    with torch.no_grad():
        ref = official_denoise(node, x, SIGMAS, one_hot, augment)
        out = model(x, SIGMAS, one_hot, **cond)
        assert out.dtype == torch.float32 and out.shape == ref.shape
        assert _rel(out, ref) < 1e-5
        if label_dim:
            assert _rel(model(x, SIGMAS, index), ref) < 1e-5  # integer labels: the same function
            assert _rel(model(x, SIGMAS), official_denoise(node, x, SIGMAS)) < 1e-5  # None: zero rows
            other = official_denoise(node, x, SIGMAS, F.one_hot((index + 1) % label_dim, label_dim).float())
            assert _rel(other, ref) > 1e-3  # the labels matter, so the comparison above can fail
        assert (
            _rel(model(x, SIGMAS[2], one_hot), official_denoise(node, x, SIGMAS[2], one_hot)) < 1e-5
        )  # scalar σ
    assert model.sigma_min == node.attrs.get("sigma_min", model.sigma_min)
    if CASES[case][0] == "iDDPMPrecond":
        assert torch.equal(model.u, node.buffers["u"])
        assert torch.equal(model.round_sigma(SIGMAS), node.buffers["u"][model.sigma_index(SIGMAS)])


def test_every_case_is_sensitive_to_each_weight_group(tmp_path):
    """A guard on the reference: perturbing the attention projection changes the official output."""
    node, _ = snapshot(tmp_path, "adm-edm")
    x, index = _inputs(5)
    one_hot = F.one_hot(index, 5).float()
    before = official_denoise(node, x, SIGMAS, one_hot)
    node.children["model"].children["dec"]["4x4_in0"].children["proj"].params["weight"] += 0.1
    assert _rel(official_denoise(node, x, SIGMAS, one_hot), before) > 1e-4


def test_fp16_flag_is_a_dtype_choice(tmp_path):
    node, path = snapshot(tmp_path, "adm-edm", dropout=0.0)
    node.kwargs["use_fp16"] = node.attrs["use_fp16"] = True
    path = write_snapshot(tmp_path / "fp16.pkl", dict(ema=to_pickle_objects(node)))
    x, index = _inputs(5)
    ref = official_denoise(node, x, SIGMAS, F.one_hot(index, 5).float())
    with torch.no_grad():
        model = load_official("edm", path)
        assert model.fp16_on_cuda and model.network_dtype(torch.device("cpu")) == torch.float32
        assert _rel(model(x, SIGMAS, index), ref) < 1e-5  # on a CPU the official code runs float32 too
        # reduced precision (bfloat16: 8-bit mantissa, float16: 11-bit): close to float32, not equal
        for dtype, bound in (("bfloat16", 0.1), ("float16", 0.02)):
            out = load_official("edm", path, dtype=dtype)(x, SIGMAS, index)
            assert out.dtype == torch.float32
            assert 1e-6 < _rel(out, ref) < bound
    with pytest.raises(UserError, match="--dtype"):
        load_official("edm", path, dtype="float8")


def test_samplers_take_one_hot_and_integer_labels(tmp_path):
    _, path = snapshot(tmp_path, "adm-edm")
    model = load_official("edm", path)
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(2, 3, RESOLUTION, RESOLUTION, generator=g)
    labels = torch.tensor([1, 4])
    runs = []
    for form in (labels, F.one_hot(labels, 5).float()):
        gen = torch.Generator().manual_seed(2)
        runs.append(
            edm_sampler(
                model,
                latents,
                form,
                num_steps=3,
                S_churn=10,
                randn_like=lambda t, gen=gen: torch.randn(t.shape, generator=gen, dtype=t.dtype),
            )
        )
    assert torch.equal(runs[0], runs[1])
    from genzoo.diffusion.guidance import ClassifierFreeGuidance

    guided = ClassifierFreeGuidance(model, 2.0)
    x = latents * 4
    assert torch.allclose(guided(x, 4.0, labels), guided(x, 4.0, F.one_hot(labels, 5).float()), atol=1e-6)


def test_presets_name_the_released_files_with_the_readme_sampler_settings():
    presets = get_source("edm").presets
    released = [f"edm-cifar10-32x32-{c}-{p}" for c in ("cond", "uncond") for p in ("vp", "ve")]
    released += [f"edm-{d}-64x64-uncond-{p}" for d in ("ffhq", "afhqv2") for p in ("vp", "ve")]
    released += ["edm-imagenet-64x64-cond-adm", "baseline-imagenet-64x64-cond-adm"]
    released += [name.replace("edm-", "baseline-", 1) for name in released[:8]]
    assert sorted(presets) == sorted(released)
    assert (
        presets["edm-cifar10-32x32-cond-vp"]["steps"] == 18
        and presets["edm-ffhq-64x64-uncond-ve"]["steps"] == 40
    )
    imagenet = presets["edm-imagenet-64x64-cond-adm"]
    assert (
        imagenet["steps"],
        imagenet["churn"],
        imagenet["s_min"],
        imagenet["s_max"],
        imagenet["s_noise"],
    ) == (256, 40.0, 0.05, 50.0, 1.003)
    assert imagenet["label_dim"] == 1000 and imagenet["precond"] == "EDMPrecond"


def test_preset_expectations_and_unknown_flags_are_checked(tmp_path):
    _, path = snapshot(tmp_path, "ddpmpp-vp")
    with pytest.raises(UserError, match="resolution 8.*expects 32"):
        load_official("edm", path, preset="edm-cifar10-32x32-cond-vp")
    with pytest.raises(UserError, match="arch 'ddpmpp', the preset expects 'ncsnpp'"):
        load_official("edm", path, arch="ncsnpp")
    with pytest.raises(UserError, match="--num_channels: not a flag"):
        load_official("edm", path, num_channels=3)
    model = load_official("edm", path, resolution=8, label_dim=3, precond="VPPrecond", arch="ddpmpp", steps=7)
    assert official_import(model).flags["sampling"]["steps"] == 7


def test_unknown_classes_and_structures_are_refused_in_one_line(tmp_path):
    target = tmp_path / "pwned.txt"
    node, _ = snapshot(tmp_path, "ddpmpp-edm-uncond")
    evil = to_pickle_objects(node)
    evil.class_name = "Precond"
    evil.module_src = f"open({str(target)!r}, 'w').write('pwned')\nclass Precond: pass\n"
    for data, needle in [
        (dict(ema=evil), "'Precond' is not one of EDM's preconditionings"),
        (dict(loss_fn=to_pickle_objects(node)), "no 'ema' entry"),
    ]:
        path = write_snapshot(tmp_path / "bad.pkl", data)
        with pytest.raises(UserError, match=needle) as info:
            load_official("edm", path)
        assert "\n" not in str(info.value)
    assert not target.exists()

    node.children["model"].children["dec"]["8x8_aux_norm"].attrs["eps"] = 1e-3  # stored code that differs
    path = write_snapshot(tmp_path / "eps.pkl", dict(ema=to_pickle_objects(node)))
    with pytest.raises(UserError, match=r"dec.8x8_aux_norm.eps is 0.001 in the file"):
        load_official("edm", path)
    node.children["model"].children["map_layer0"].cls = "MyLinear"
    path = write_snapshot(tmp_path / "cls.pkl", dict(ema=to_pickle_objects(node)))
    with pytest.raises(UserError, match="map_layer0 is MyLinear in the file, Linear in genzoo"):
        load_official("edm", path)
    node.kwargs["model_type"] = "UNet"
    path = write_snapshot(tmp_path / "type.pkl", dict(ema=to_pickle_objects(node)))
    with pytest.raises(UserError, match="model_type 'UNet'"):
        load_official("edm", path)


def test_converted_edm_precond_config_is_strict_json(tmp_path):
    _, path = snapshot(tmp_path, "adm-edm")
    model = load_official("edm", path)
    config, weights = get_source("edm").to_genzoo(model, {})
    text = json.dumps(config, allow_nan=False)  # no Infinity / NaN tokens
    assert "sigma_max" not in json.loads(text)["precond_kwargs"] and config["sigma_max"] is None
    from genzoo.diffusion.family import build_diffusion_model

    rebuilt = build_diffusion_model(json.loads(text))
    rebuilt.load_state_dict({k[len("net.") :]: v for k, v in weights["model"].items()})
    assert rebuilt.sigma_max == float("inf") and rebuilt.sigma_data == 0.5


def test_convert_sample_and_eval_from_the_cli(tmp_path, capsys):
    node = build_official("VPPrecond", "SongUNet", 32, 3, label_dim=10, seed=3, **DDPMPP)
    pkl = write_snapshot(tmp_path / "edm-cifar10-32x32-cond-vp.pkl", dict(ema=to_pickle_objects(node)))
    out = tmp_path / "converted"
    assert (
        main(
            [
                "convert",
                "--from",
                "edm",
                "--preset",
                "edm-cifar10-32x32-cond-vp",
                str(pkl),
                str(out),
                "--steps",
                "3",
            ]
        )
        == 0
    )
    config = json.loads((out / "config.json").read_text())
    assert config["arch"] == "songunet" and config["precond"] == "vp" and config["num_classes"] == 10
    assert config["sampling_defaults"]["steps"] == 3
    assert (
        main(
            [
                "sample",
                "--ckpt",
                str(out),
                "--seeds",
                "0-5",
                "--batch",
                "4",
                "--out",
                str(tmp_path / "conv.npz"),
            ]
        )
        == 0
    )
    assert "NFE 5 per image" in capsys.readouterr().out  # 3 Heun steps: 2·3 − 1 evaluations
    assert (
        main(
            [
                "sample",
                "--ckpt",
                str(pkl),
                "--seeds",
                "0-5",
                "--steps",
                "3",
                "--out",
                str(tmp_path / "pkl.npz"),
            ]
        )
        == 0
    )
    converted, direct = np.load(tmp_path / "conv.npz"), np.load(tmp_path / "pkl.npz")
    assert converted["arr_0"].shape == (6, 32, 32, 3) and converted["arr_0"].dtype == np.uint8
    assert np.array_equal(converted["arr_0"], direct["arr_0"])
    assert np.array_equal(converted["arr_1"], direct["arr_1"])
    assert (
        main(
            [
                "eval",
                "--samples",
                str(tmp_path / "conv.npz"),
                "--ref",
                "shapes",
                "--features",
                "shapes",
                "--metrics",
                "fid",
                "--ref-count",
                "50",
            ]
        )
        == 0
    )
    assert "FD (shapes)" in capsys.readouterr().out

    import genzoo

    model = genzoo.load(out)
    x, _ = torch.randn(2, 3, 32, 32), None
    with torch.no_grad():
        ref = official_denoise(node, x, torch.tensor([0.3, 9.0]), F.one_hot(torch.tensor([2, 7]), 10).float())
        assert _rel(model(x, torch.tensor([0.3, 9.0]), torch.tensor([2, 7])), ref) < 1e-5
    assert main(["convert", "--from", "edm", str(tmp_path / "missing.pkl"), str(tmp_path / "o")]) == 2
    assert "missing.pkl: no such file" in capsys.readouterr().err


def test_label_forms_convert_both_ways():
    from genzoo.nets.labels import label_indices, one_hot_labels

    index = torch.tensor([0, 2, 3, -1])  # 3 = label_dim and −1: the null label
    rows = one_hot_labels(index, 3, 4)
    assert torch.equal(rows, torch.tensor([[1.0, 0, 0], [0, 0, 1], [0, 0, 0], [0, 0, 0]]))
    assert torch.equal(label_indices(rows, 3), torch.tensor([0, 2, 3, 3]))
    assert torch.equal(one_hot_labels(None, 3, 2), torch.zeros(2, 3))
    assert one_hot_labels(rows * 2, 3, 4).max() == 2  # soft or scaled rows pass through, as in EDM
    with pytest.raises(UserError, match="one-hot rows of width 4 for a model with 3 classes"):
        one_hot_labels(torch.zeros(2, 4), 3, 2)
    with pytest.raises(UserError, match="expected int indices"):
        label_indices(torch.tensor([0.5, 1.0]), 3)


def test_sample_refuses_a_snapshot_no_importer_knows(tmp_path, capsys):
    target = tmp_path / "pwned.txt"
    mystery = FakePersistent(
        "MysteryNet",
        {"_parameters": {}, "_modules": {}},
        module_src=f"open({str(target)!r}, 'w').write('pwned')\n",
    )
    path = write_snapshot(tmp_path / "mystery.pkl", dict(ema=mystery))
    assert main(["sample", "--ckpt", str(path), "--seeds", "0", "--out", str(tmp_path / "s.npz")]) == 2
    err = capsys.readouterr().err
    assert "'ema' is MysteryNet, which no genzoo importer knows" in err and len(err.strip().splitlines()) == 1
    assert not target.exists() and not (tmp_path / "s.npz").exists()


def test_record_of_a_converted_model_and_of_a_snapshot(tmp_path):
    """A converted official model and a .pkl imported on the fly say which format they came from."""
    import genzoo

    _, pkl = snapshot(tmp_path, "ddpmpp-vp")
    assert main(["convert", "--from", "edm", str(pkl), str(tmp_path / "converted")]) == 0
    converted = genzoo.record_of(genzoo.load(tmp_path / "converted"))
    assert (converted.family, converted.arch, converted.source, converted.source_format) == (
        "diffusion", "songunet", "model", "edm")
    assert converted.weights_file == tmp_path / "converted" / "model.safetensors"
    assert converted.config["converted_from"]["file"] == str(pkl)
    model = genzoo.load(pkl)
    outside = ("config", "official_flags", "official_source", "official_path")
    assert not [a for a in outside if hasattr(model, a)]
    direct = genzoo.record_of(model)
    assert (direct.source, direct.source_format, direct.path, direct.model_dir, direct.weights_file) == (
        "snapshot", "edm", pkl, None, pkl)
    assert {k: v for k, v in direct.config.items() if k != "converted_from"} == {
        k: v for k, v in converted.config.items() if k != "converted_from"}
