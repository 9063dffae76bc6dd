"""`genzoo edit ...` on a converted consistency model and small image files."""

import numpy as np
import pytest
from model_dirs import consistency_model_dir
from PIL import Image

from genzoo.cli import main

TINY = dict(
    image_size=16,
    num_channels=32,
    num_res_blocks=1,
    channel_mult="1,2",
    attention_resolutions="8",
    num_head_channels=16,
    class_cond=False,
    resblock_updown=True,
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return consistency_model_dir(tmp_path_factory.mktemp("cm"), TINY)


def _png(path, array):
    Image.fromarray(array).save(path)
    return str(path)


def test_inpaint_cli_keeps_unmasked_pixels(model_dir, tmp_path):
    rng = np.random.default_rng(0)
    image = _png(tmp_path / "a.png", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    mask = np.zeros((16, 16), dtype=np.uint8)
    mask[4:12, 4:12] = 255
    mask_path = _png(tmp_path / "m.png", mask)
    assert (
        main(
            [
                "edit",
                "inpaint",
                "--ckpt",
                str(model_dir),
                "--image",
                image,
                "--mask",
                mask_path,
                "--out",
                str(tmp_path / "out"),
                "--steps",
                "2",
            ]
        )
        == 0
    )
    out = np.asarray(Image.open(tmp_path / "out" / "inpaint-000.png"))
    src = np.asarray(Image.open(image))
    keep = mask == 0
    assert np.array_equal(out[keep], src[keep])
    assert (tmp_path / "out" / "grid.png").is_file()


def test_other_operations_write_results(model_dir, tmp_path):
    rng = np.random.default_rng(1)
    image = _png(tmp_path / "a.png", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    small = _png(tmp_path / "s.png", rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
    base = ["--ckpt", str(model_dir), "--out", str(tmp_path / "o")]
    assert main(["edit", "colorize", "--image", image, "--steps", "1", *base]) == 0
    assert main(["edit", "superres", "--image", small, "--factor", "4", "--steps", "1", *base]) == 0
    out = np.asarray(Image.open(tmp_path / "o" / "superres-000.png")).astype(np.float64)
    means = out.reshape(4, 4, 4, 4, 3).mean(axis=(1, 3))
    assert np.abs(means - np.asarray(Image.open(small))).max() <= 1.0  # uint8 rounding only
    assert main(["edit", "stroke", "--image", image, "--sigma", "5", *base]) == 0
    assert main(["edit", "denoise", "--image", image, "--sigma", "0.3", "--add-noise", *base]) == 0
    assert main(["edit", "interpolate", "--seeds", "3,4", "--num", "3", "--ts", "0,20,39", *base]) == 0
    assert len(list((tmp_path / "o").glob("interpolate-*.png"))) == 3


def test_bad_inputs_exit_2(model_dir, tmp_path, capsys):
    big = _png(tmp_path / "b.png", np.zeros((32, 32, 3), dtype=np.uint8))
    assert (
        main(
            [
                "edit",
                "denoise",
                "--ckpt",
                str(model_dir),
                "--image",
                big,
                "--sigma",
                "1",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert "the model makes 16x16" in capsys.readouterr().err
    assert (
        main(["edit", "interpolate", "--ckpt", str(model_dir), "--seeds", "1", "--out", str(tmp_path)]) == 2
    )
