"""GigaGAN through the CLI: `genzoo sample --prompt` and `genzoo upsample` on saved model directories."""

import numpy as np
import pytest
import torch

from genzoo import nets
from genzoo.checkpoints import save_model_dir
from genzoo.cli import main
from genzoo.io import NpzWriter, read_npz_images, save_image

TEXT = {"kind": "learned", "dim": 16, "depth": 1, "heads": 2}


def _save(path, net_name, arch, net):
    torch.manual_seed(0)
    model = nets.build(net_name, **net)
    config = {
        "family": "gan",
        "arch": arch,
        "net": net,
        "sampled_player": "G",
        "num_classes": 0,
        "resolution": getattr(model, "resolution", 0),
        "channels": 3,
    }
    save_model_dir(path, config, {"model": {f"G.{k}": v for k, v in model.state_dict().items()}})
    return path


@pytest.fixture(scope="module")
def generator_dir(tmp_path_factory):
    net = dict(
        resolution=8,
        z_dim=8,
        w_dim=16,
        channel_base=64,
        channel_max=8,
        num_kernels=2,
        attn_res=[8],
        head_dim=8,
        text=TEXT,
        default_prompts=["a red circle"],
    )
    return _save(tmp_path_factory.mktemp("g") / "gigagan", "gigagan-generator", "gigagan", net)


def _upsampler_dir(tmp_path, text):
    net = dict(
        scale=2, down=1, channels=8, z_dim=4, w_dim=8, num_kernels=2, head_dim=8, text=text, in_resolution=8
    )
    return _save(tmp_path / "up", "gigagan-upsampler", "gigagan-upsampler", net)


def test_sample_with_prompts_writes_npz(generator_dir, tmp_path, capsys):
    out = tmp_path / "s.npz"
    assert (
        main(
            [
                "sample",
                "--ckpt",
                str(generator_dir),
                "--seeds",
                "0-2",
                "--out",
                str(out),
                "--prompt",
                "a red circle",
                "--prompt",
                "a blue square",
            ]
        )
        == 0
    )
    images, _ = read_npz_images(out)
    assert images.shape == (3, 8, 8, 3)
    again = tmp_path / "t.npz"
    assert (
        main(
            [
                "sample",
                "--ckpt",
                str(generator_dir),
                "--seeds",
                "2",
                "--out",
                str(again),
                "--prompt",
                "a red circle",
                "--prompt",
                "a blue square",
            ]
        )
        == 0
    )
    np.testing.assert_array_equal(read_npz_images(again)[0][0], images[2])  # seed 2 -> prompt 2 mod 2
    assert (
        main(
            [
                "sample",
                "--ckpt",
                str(generator_dir),
                "--seeds",
                "0-1",
                "--grid",
                str(tmp_path / "g.png"),
                "--style-seed",
                "5",
                "--mix-layer",
                "1",
                "--prompt-fine",
                "a blue cross",
            ]
        )
        == 0
    )


def test_sample_records_each_seeds_prompt_and_eval_scores_the_class_it_names(generator_dir, tmp_path, capsys):
    from genzoo.data.shapes import COLOR_NAMES, SHAPE_NAMES, caption_class
    from genzoo.metrics import evaluate

    out = tmp_path / "p.npz"
    argv = ["sample", "--ckpt", str(generator_dir), "--seeds", "0-4", "--batch", "2", "--out", str(out),
            "--prompt", "a red circle", "--prompt", "a large blue cross at the top"]
    assert main(argv) == 0
    with np.load(out, allow_pickle=False) as data:
        prompts = list(data["prompts"])
        assert "arr_1" not in data.files  # no class labels for a text-conditional model
    assert prompts == ["a red circle", "a large blue cross at the top"] * 2 + ["a red circle"]
    cross_blue = SHAPE_NAMES.index("cross") * len(COLOR_NAMES) + COLOR_NAMES.index("blue")
    assert [caption_class(p) for p in prompts[:2]] == [0, cross_blue] and caption_class("a mauve blob") == -1
    result = evaluate(out, "shapes:8", metrics=["acc"], features="shapes")
    from genzoo.metrics.shapes_features import load_shapes_classifier

    predicted = load_shapes_classifier()(torch.from_numpy(read_npz_images(out)[0]).permute(0, 3, 1, 2))
    expected = (predicted["logits"].argmax(1) == torch.tensor([caption_class(p) for p in prompts])).double()
    assert result["accuracy"] == pytest.approx(float(expected.mean()))


def test_npz_writer_prompts_must_match_the_images(tmp_path):
    writer = NpzWriter(tmp_path / "x.npz")
    writer.write(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), prompts=["a"])
    with pytest.raises(ValueError, match="1 prompts for 2 images"):
        writer.close()
    assert list(tmp_path.iterdir()) == []  # no partial file, no temporary left behind


def test_caption_class_matches_the_shapes_labels():
    from genzoo.data import load_dataset
    from genzoo.data.shapes import caption_class

    data = load_dataset("shapes:8")
    assert [caption_class(data.caption(i)) for i in range(64)] == [data[i][1] for i in range(64)]


def test_upsample_npz_keeps_labels_and_png_roundtrip(tmp_path, capsys):
    run = _upsampler_dir(tmp_path, None)
    src = tmp_path / "in.npz"
    writer = NpzWriter(src)
    writer.write(
        np.random.default_rng(0).integers(0, 256, (3, 6, 10, 3), dtype=np.uint8), np.array([4, 5, 6])
    )
    writer.close()
    out = tmp_path / "out.npz"
    assert main(["upsample", "--upsampler", str(run), "--input", str(src), "--out", str(out)]) == 0
    images, labels = read_npz_images(out)
    assert images.shape == (3, 12, 20, 3) and labels.tolist() == [4, 5, 6]
    assert "3 images 6x10 -> 12x20" in capsys.readouterr().out
    png = tmp_path / "one.png"
    save_image(np.full((8, 8, 3), 200, np.uint8), png)
    assert (
        main(
            [
                "upsample",
                "--upsampler",
                str(run),
                "--input",
                str(png),
                "--out",
                str(tmp_path / "o.png"),
                "--seed",
                "3",
            ]
        )
        == 0
    )
    assert (tmp_path / "o.png").is_file()


def test_upsample_user_errors(tmp_path, capsys):
    plain, texty = _upsampler_dir(tmp_path / "a", None), _upsampler_dir(tmp_path / "b", TEXT)
    png, good = tmp_path / "odd.png", tmp_path / "ok.png"
    save_image(np.zeros((7, 8, 3), np.uint8), png)
    save_image(np.zeros((8, 8, 3), np.uint8), good)
    cases = [
        (["--upsampler", str(plain), "--input", str(png)], "multiples of 2"),
        (["--upsampler", str(plain), "--input", str(tmp_path / "x.txt")], "expected a .npz sample file"),
        (["--upsampler", str(texty), "--input", str(good)], "text-conditioned; give --prompt"),
    ]
    for args, message in cases:
        assert main(["upsample", *args, "--out", str(tmp_path / "o.npz")]) == 2
        assert message in capsys.readouterr().err
    assert (
        main(
            [
                "upsample",
                "--upsampler",
                str(plain),
                "--input",
                str(good),
                "--out",
                str(tmp_path / "o.npz"),
                "--prompt",
                "red",
            ]
        )
        == 2
    )
    assert "not text-conditioned" in capsys.readouterr().err
    assert (
        main(
            [
                "upsample",
                "--upsampler",
                str(texty),
                "--input",
                str(good),
                "--out",
                str(tmp_path / "o.npz"),
                "--prompt",
                "a red circle",
            ]
        )
        == 0
    )
