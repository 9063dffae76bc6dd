"""FD_DINOv2: the DINOv2 ViT port (released key names, shapes read from the state dict), EDM2's
preprocessing, and `genzoo eval --features dinov2` end to end on tiny weights files built here."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from test_reproduce import run_preset, stand_ins  # noqa: F401 - stand_ins: the tiny converted models

from genzoo.cli import main
from genzoo.errors import UserError
from genzoo.metrics import frechet_distance, mean_cov
from genzoo.metrics.dinov2 import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    dinov2_config_from_state,
    dinov2_from_state,
    edm2_dinov2_preprocess,
    interpolate_pos_embed,
    load_dinov2,
)

EPS32 = torch.finfo(torch.float32).eps


def tiny_state(width=128, depth=2, grid=4, patch=14, swiglu=False, registers=0, seed=0, device=None):
    """A DINOv2 state dict with the released key names (``dinov2_vit*14_pretrain.pth``), random values."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, std=0.1, mean=0.0):
        if device == "meta":
            return torch.empty(*shape, device="meta")
        return mean + std * torch.randn(*shape, generator=gen)

    state = {
        "cls_token": rand(1, 1, width),
        "pos_embed": rand(1, 1 + grid * grid, width),
        "mask_token": rand(1, width),
        "patch_embed.proj.weight": rand(width, 3, patch, patch, std=0.03),
        "patch_embed.proj.bias": rand(width),
        "norm.weight": rand(width, mean=1),
        "norm.bias": rand(width),
    }
    if registers:
        state["register_tokens"] = rand(1, registers, width)
    hidden = 4 * width
    swiglu_hidden = (int(hidden * 2 / 3) + 7) // 8 * 8  # DINOv2's SwiGLUFFNFused width
    for i in range(depth):
        b = f"blocks.{i}."
        state.update(
            {
                b + "norm1.weight": rand(width, mean=1),
                b + "norm1.bias": rand(width),
                b + "attn.qkv.weight": rand(3 * width, width),
                b + "attn.qkv.bias": rand(3 * width),
                b + "attn.proj.weight": rand(width, width),
                b + "attn.proj.bias": rand(width),
                b + "ls1.gamma": rand(width, std=0.5),
                b + "norm2.weight": rand(width, mean=1),
                b + "norm2.bias": rand(width),
                b + "ls2.gamma": rand(width, std=0.5),
            }
        )
        if swiglu:
            state.update(
                {
                    b + "mlp.w12.weight": rand(2 * swiglu_hidden, width),
                    b + "mlp.w12.bias": rand(2 * swiglu_hidden),
                    b + "mlp.w3.weight": rand(width, swiglu_hidden, std=0.05),
                    b + "mlp.w3.bias": rand(width),
                }
            )
        else:
            state.update(
                {
                    b + "mlp.fc1.weight": rand(hidden, width),
                    b + "mlp.fc1.bias": rand(hidden),
                    b + "mlp.fc2.weight": rand(width, hidden, std=0.05),
                    b + "mlp.fc2.bias": rand(width),
                }
            )
    return state


def reference_class_token(state, x, registers=0):
    """The ViT written out in float64 with an explicit softmax attention (64-dimensional heads), at the
    native position grid."""
    s = {k: v.double() for k, v in state.items()}
    x = x.double()
    n = len(x)
    weight = s["patch_embed.proj.weight"]
    width, _, p, _ = weight.shape
    gh, gw = x.shape[2] // p, x.shape[3] // p
    patches = x.reshape(n, 3, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5).reshape(n, gh * gw, 3 * p * p)
    h = patches @ weight.reshape(width, -1).T + s["patch_embed.proj.bias"]
    h = torch.cat([s["cls_token"].expand(n, 1, width), h], 1) + s["pos_embed"]
    if registers:
        h = torch.cat([h[:, :1], s["register_tokens"].expand(n, registers, width), h[:, 1:]], 1)
    length, heads, d = h.shape[1], width // 64, 64

    def layer_norm(v, name):
        centred = v - v.mean(-1, keepdim=True)
        return (
            centred / torch.sqrt((centred**2).mean(-1, keepdim=True) + 1e-6) * s[name + ".weight"]
            + s[name + ".bias"]
        )

    def linear(v, name):
        return v @ s[name + ".weight"].T + s[name + ".bias"]

    depth = 1 + max(int(k.split(".")[1]) for k in s if k.startswith("blocks."))
    for i in range(depth):
        b = f"blocks.{i}."
        qkv = linear(layer_norm(h, b + "norm1"), b + "attn.qkv")
        q, k, v = (
            qkv[..., j * width : (j + 1) * width].reshape(n, length, heads, d).transpose(1, 2)
            for j in range(3)
        )
        logits = q @ k.transpose(-1, -2) / math.sqrt(d)
        attention = torch.exp(logits - logits.amax(-1, keepdim=True))
        attention = attention / attention.sum(-1, keepdim=True)
        mixed = (attention @ v).transpose(1, 2).reshape(n, length, width)
        h = h + s[b + "ls1.gamma"] * linear(mixed, b + "attn.proj")
        a = layer_norm(h, b + "norm2")
        if b + "mlp.w12.weight" in s:
            gate, value = linear(a, b + "mlp.w12").chunk(2, -1)
            mlp = linear(gate * torch.sigmoid(gate) * value, b + "mlp.w3")
        else:
            u = linear(a, b + "mlp.fc1")
            mlp = linear(0.5 * u * (1 + torch.erf(u / math.sqrt(2))), b + "mlp.fc2")
        h = h + s[b + "ls2.gamma"] * mlp
    return layer_norm(h, "norm")[:, 0]


@pytest.mark.parametrize(
    "size, width, depth, heads, hidden, swiglu",
    [("l", 1024, 24, 16, 4096, False), ("g", 1536, 40, 24, 4096, True), ("s", 384, 12, 6, 1536, False)],
)
def test_released_shapes_give_the_released_architectures(size, width, depth, heads, hidden, swiglu):
    # shapes only (meta tensors): the released files are 518 px / 14 = 37² patches
    state = tiny_state(width=width, depth=depth, grid=37, swiglu=swiglu, device="meta")
    config = dinov2_config_from_state({k: v for k, v in state.items() if k != "mask_token"})
    assert (config.width, config.depth, config.heads, config.patch, config.grid) == (
        width,
        depth,
        heads,
        14,
        37,
    )
    assert (config.mlp_hidden, config.swiglu, config.layer_scale, config.registers) == (
        hidden,
        swiglu,
        True,
        0,
    )
    assert (config.interpolate_antialias, config.interpolate_offset) == (False, 0.1)


@pytest.mark.parametrize("swiglu, registers", [(False, 0), (True, 0), (False, 4)])
def test_forward_equals_a_float64_transformer_written_out(swiglu, registers):
    state = tiny_state(width=128, depth=2, grid=4, swiglu=swiglu, registers=registers)
    net = dinov2_from_state(state)
    assert (net.config.width, net.config.depth, net.config.heads, net.config.registers) == (
        128,
        2,
        2,
        registers,
    )
    x = torch.randn(3, 3, 56, 56, generator=torch.Generator().manual_seed(1))  # the native 4×4 grid
    expected = reference_class_token(state, x, registers)
    got = net(x).double()
    scale = expected.abs().max()
    # float32 accumulation over sums of ≤ 4·width terms, through two blocks: a few hundred ulps
    assert torch.allclose(got, expected, rtol=0, atol=512 * EPS32 * float(scale)), (
        (got - expected).abs().max()
    )
    assert torch.allclose(
        net.double()(x.double()), expected, rtol=0, atol=1e3 * torch.finfo(torch.float64).eps
    )


def test_position_embedding_is_unchanged_on_the_native_grid():
    pos = torch.randn(1, 1 + 37 * 37, 8)
    assert interpolate_pos_embed(pos, 37, 37) is pos
    assert interpolate_pos_embed(pos, 37, 37, antialias=True, offset=0.0) is pos


def bicubic_reference(grid, out, scale):
    """Separable cubic convolution (Keys, a = −0.75) sampling input (i + ½)/scale − ½, clamped taps."""
    matrix = torch.zeros(out, grid, dtype=torch.float64)
    a = -0.75
    for i in range(out):
        src = (i + 0.5) / scale - 0.5
        base = math.floor(src)
        t = src - base
        for j, dist in zip(range(base - 1, base + 3), (1 + t, t, 1 - t, 2 - t)):
            w = (
                (a + 2) * dist**3 - (a + 3) * dist**2 + 1
                if dist <= 1
                else a * dist**3 - 5 * a * dist**2 + 8 * a * dist - 4 * a
            )
            matrix[i, min(max(j, 0), grid - 1)] += w
    return matrix


def test_position_embedding_interpolation_uses_the_offset_scale_factor():
    # DINOv2 resizes its 37×37 grid to 16×16 (224 px) with scale factor (16 + 0.1)/37, not 16/37
    grid, out, dim = 37, 16, 5
    pos = torch.randn(1, 1 + grid * grid, dim, dtype=torch.float64)
    got = interpolate_pos_embed(pos, out, out)
    resize = bicubic_reference(grid, out, (out + 0.1) / grid)
    patches = pos[0, 1:].reshape(grid, grid, dim)
    expected = torch.einsum("ia,jb,abd->ijd", resize, resize, patches).reshape(out * out, dim)
    assert torch.equal(got[0, 0], pos[0, 0].float().double())  # computed in float32, as DINOv2 does
    assert torch.allclose(got[0, 1:], expected, rtol=0, atol=64 * EPS32 * float(patches.abs().max()))
    plain = torch.einsum("ia,jb,abd->ijd", *(2 * [bicubic_reference(grid, out, out / grid)]), patches)
    assert not torch.allclose(got[0, 1:], plain.reshape(out * out, dim), atol=1e-3)  # the offset matters


def keys_cubic(x, a=-0.5):
    x = abs(x)
    return (
        (a + 2) * x**3 - (a + 3) * x**2 + 1
        if x < 1
        else a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
        if x < 2
        else 0.0
    )


def test_preprocessing_is_edm2s_antialiased_bicubic_and_imagenet_normalisation():
    # 448 -> 224 along x (rows identical): output i averages inputs 2i−3 … 2i+4 with the cubic kernel
    # (a = −0.5, antialiased: stretched by the scale 2), weights normalised; then (x/255 − mean)/std.
    rng = np.random.default_rng(0)
    row = torch.from_numpy(rng.integers(0, 256, 448).astype(np.uint8))
    images = row.expand(1, 3, 448, 448)
    got = edm2_dinov2_preprocess(images).double()
    assert got.shape == (1, 3, 224, 224)
    weights = torch.tensor([keys_cubic((k - 3.5) / 2) for k in range(8)], dtype=torch.float64)
    weights /= weights.sum()
    for i in (2, 50, 111, 221):
        value = float(weights @ row[2 * i - 3 : 2 * i + 5].double())
        for c in range(3):
            expected = (value / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
            assert abs(float(got[0, c, 100, i]) - expected) <= 256 * EPS32 / IMAGENET_STD[c], (i, c)
    # a constant image of any size (grey expanded to RGB) maps to the normalised constant
    grey = torch.full((2, 1, 37, 37), 200, dtype=torch.uint8)
    out = edm2_dinov2_preprocess(grey).double()
    for c in range(3):
        expected = (200 / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        assert torch.allclose(
            out[:, c], torch.full_like(out[:, c], expected), rtol=0, atol=64 * EPS32 / 0.224
        )


# ----------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("dinov2") / "tiny.pth"
    # 28-px patches (read from the file like the released 14): an 8×8 grid at 224 px keeps the CLI tests fast
    torch.save(tiny_state(width=64, depth=2, grid=4, patch=28, seed=3), path)
    return path


def eval_argv(tmp_path, *extra):
    """`genzoo eval` of the image sets written by :func:`image_sets` in DINOv2 features."""
    samples, real = str(tmp_path / "samples.npz"), str(tmp_path / "real.npz")
    return ["eval", "--samples", samples, "--ref", real, "--features", "dinov2", *extra]


def image_sets(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (1, 16, 16, 3))
    samples = np.clip(base + rng.normal(0, 40, (72, 16, 16, 3)), 0, 255).astype(np.uint8)
    real = np.clip(base + rng.normal(0, 30, (70, 16, 16, 3)), 0, 255).astype(np.uint8)
    np.savez(tmp_path / "samples.npz", samples)
    np.savez(tmp_path / "real.npz", real)
    return samples, real


def test_eval_dinov2_end_to_end_on_samples_and_reference(tmp_path, tiny_weights, capsys):
    samples, real = image_sets(tmp_path)
    extractor = load_dinov2(tiny_weights)

    def stats(images):
        with torch.no_grad():
            features = extractor(torch.from_numpy(images).permute(0, 3, 1, 2))["pool"].double()
        return mean_cov(features)

    real_stats = stats(real)
    expected = frechet_distance(*stats(samples), *real_stats)
    argv = [
        "eval",
        "--samples",
        str(tmp_path / "samples.npz"),
        "--features",
        "dinov2",
        "--dinov2",
        str(tiny_weights),
        "--batch",
        "32",
        "--device",
        "cpu",
    ]
    assert (
        main(
            [
                *argv,
                "--ref",
                str(tmp_path / "real.npz"),
                "--save-ref",
                str(tmp_path / "ref.npz"),
                "--out",
                str(tmp_path / "m1.json"),
            ]
        )
        == 0
    )
    assert "FD_DINOv2" in capsys.readouterr().out
    record = json.loads((tmp_path / "m1.json").read_text())
    assert record["features"] == "dinov2" and record["num_samples"] == 72 and record["num_ref"] == 70
    assert expected > 0 and record["fd"] == pytest.approx(expected, rel=1e3 * EPS32)
    with np.load(tmp_path / "ref.npz") as ref:  # the reference statistics are DINOv2's, width 64
        assert str(ref["features"]) == "dinov2" and ref["mu"].shape == (64,)
        np.testing.assert_allclose(ref["mu"], real_stats[0], rtol=0, atol=1e3 * EPS32)
    # the saved statistics are used as they are, and give the same number
    assert main([*argv, "--ref", str(tmp_path / "ref.npz"), "--out", str(tmp_path / "m2.json")]) == 0
    assert json.loads((tmp_path / "m2.json").read_text())["fd"] == record["fd"]
    # --blocks: K disjoint blocks of samples, each against the reference
    assert (
        main([*argv, "--ref", str(tmp_path / "ref.npz"), "--blocks", "2", "--out", str(tmp_path / "m3.json")])
        == 0
    )
    blocks = json.loads((tmp_path / "m3.json").read_text())
    halves = [frechet_distance(*stats(samples[i * 36 : (i + 1) * 36]), *real_stats) for i in range(2)]
    assert blocks["fd_blocks"] == pytest.approx(halves, rel=1e3 * EPS32)


def test_eval_dinov2_bad_files_exit_2_with_one_line(tmp_path, tiny_weights, capsys):
    image_sets(tmp_path)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    inception_like = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(2, 3, 3, 3)}, inception_like)
    base = eval_argv(tmp_path, "--device", "cpu")
    env = os.environ.pop("GENZOO_DINOV2", None)
    try:
        for extra, words in (
            ([], "GENZOO_DINOV2"),
            (["--dinov2", str(tmp_path / "none.pth")], "no such file"),
            (["--dinov2", str(garbage)], "expected a DINOv2 state dict"),
            (["--dinov2", str(inception_like)], "missing cls_token"),
        ):
            capsys.readouterr()
            assert main([*base, *extra]) == 2, extra
            err = capsys.readouterr().err.strip()
            assert "--dinov2" in err and words in err and "\n" not in err, err
            assert "Traceback" not in err
        assert main([*base, "--dinov2", str(tiny_weights), "--metrics", "fid,is"]) == 2
        assert "Inception" in capsys.readouterr().err
    finally:
        if env is not None:
            os.environ["GENZOO_DINOV2"] = env
    with pytest.raises(UserError, match="missing"):
        dinov2_from_state({k: v for k, v in tiny_state(width=64).items() if k != "blocks.1.ls2.gamma"})


def test_safetensors_weights_and_chunked_keys_load_the_same(tmp_path, tiny_weights):
    from safetensors.torch import save_file

    state = torch.load(tiny_weights, weights_only=True)
    # block_chunks=1 layout: every block under chunk 0, blocks.0.I.*
    save_file(
        {k.replace("blocks.", "blocks.0.", 1): v for k, v in state.items()}, tmp_path / "tiny.safetensors"
    )
    x = torch.randint(0, 256, (2, 3, 20, 20), dtype=torch.uint8)
    assert torch.equal(
        load_dinov2(tmp_path / "tiny.safetensors")(x)["pool"], load_dinov2(tiny_weights)(x)["pool"]
    )


def test_two_process_eval_with_dinov2_equals_one_process(tmp_path, tiny_weights):
    image_sets(tmp_path)
    argv = eval_argv(
        tmp_path, "--dinov2", str(tiny_weights), "--batch", "16", "--blocks", "2", "--device", "auto"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "genzoo",
        *argv,
        "--out",
        str(tmp_path / "two.json"),
    ]
    run = subprocess.run(cmd, env=env, capture_output=True, timeout=300, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert main([*argv, "--out", str(tmp_path / "one.json")]) == 0
    one, two = (json.loads((tmp_path / n).read_text()) for n in ("one.json", "two.json"))
    assert one["fd"] == two["fd"] and one["fd_blocks"] == two["fd_blocks"] and one["num_ref"] == 70


def test_edm2_presets_also_report_fd_dinov2(stand_ins, tiny_weights, tmp_path, capsys, monkeypatch):  # noqa: F811
    run_preset("edm2-imagenet64-xl", stand_ins / "edm2", tmp_path, capsys, monkeypatch,
               extra=("--dinov2", str(tiny_weights)))
    record = json.loads((tmp_path / "out" / "metrics.json").read_text())
    dino = json.loads((tmp_path / "out" / "metrics-dinov2.json").read_text())
    assert record["features"] == "shapes" and dino["features"] == "dinov2"
    assert record["fd_dinov2"] == dino["fd"] and record["fd"] != record["fd_dinov2"]
    # an option a preset does not take is an error
    assert (
        main(
            [
                "reproduce",
                "edm-cifar10-cond-vp",
                "--ckpt",
                str(stand_ins / "diffusion"),
                "--ref",
                "shapes",
                "--dinov2",
                str(tiny_weights),
            ]
        )
        == 2
    )
    assert "reports FID only" in capsys.readouterr().err
