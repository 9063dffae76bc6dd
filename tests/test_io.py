import numpy as np
import pytest
import torch
from PIL import Image

from genzoo.errors import UserError
from genzoo.io import NpzWriter, load_image, read_npz_images, save_grid, save_image, to_uint8
from genzoo.io.images import grid_array


def test_to_uint8_rounds_like_adm():
    x = torch.tensor([-1.5, -1.0, -0.999, 0.0, 0.5, 1.0, 2.0])
    assert to_uint8(x).tolist() == [0, 0, 0, 128, 191, 255, 255]  # round((x + 1) * 127.5), clamped
    assert to_uint8(torch.tensor([7], dtype=torch.uint8)).tolist() == [7]


def test_grid_layout(tmp_path):
    images = torch.arange(5, dtype=torch.uint8).mul(40).view(5, 1, 1, 1).expand(5, 3, 2, 2)
    canvas = grid_array(images, nrow=3, pad=1)
    assert canvas.shape == (2 * 3 + 1, 3 * 3 + 1, 3)
    assert canvas[1, 1].tolist() == [0] * 3 and canvas[1, 4].tolist() == [40] * 3
    assert canvas[4, 4].tolist() == [160] * 3  # item 4: second row, second column
    assert canvas[0, 0].tolist() == [255] * 3 and canvas[4, 7].tolist() == [255] * 3  # padding / empty cell
    path = save_grid(images, tmp_path / "g" / "grid.png", nrow=3, scale=2)
    saved = np.asarray(Image.open(path))
    assert saved.shape == (2 * (2 * 4 + 2), 2 * (3 * 4 + 2), 3)
    assert np.array_equal(saved[::2, ::2], grid_array(images, nrow=3))


def test_save_and_load_image(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    save_image(rgb, tmp_path / "a.png")
    assert np.array_equal(load_image(tmp_path / "a.png"), rgb)
    gray = load_image(tmp_path / "a.png", channels=1)
    assert gray.shape == (5, 6, 1)
    assert np.array_equal(gray[..., 0], np.asarray(Image.fromarray(rgb).convert("L")))
    (tmp_path / "b.png").write_bytes(b"junk")
    with pytest.raises(UserError, match=r"b\.png: not a readable image"):
        load_image(tmp_path / "b.png")
    with pytest.raises(UserError, match="no such image file"):
        load_image(tmp_path / "c.png")


def test_npz_writer_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    first = rng.integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)
    second = torch.rand(2, 3, 4, 4) * 2 - 1
    with NpzWriter(tmp_path / "s.npz") as writer:
        writer.write(first, [1, 2, 3])
        writer.write(second, torch.tensor([4, 5]))
    images, labels = read_npz_images(tmp_path / "s.npz")
    assert images.shape == (5, 4, 4, 3) and images.dtype == np.uint8
    assert np.array_equal(images[:3], first)
    assert np.array_equal(images[3:], to_uint8(second).numpy().transpose(0, 2, 3, 1))
    assert labels.tolist() == [1, 2, 3, 4, 5] and labels.dtype == np.int64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz"]  # temporary files removed
    with np.load(tmp_path / "s.npz") as data:  # a standard npz that numpy reads
        assert np.array_equal(data["arr_0"], images)


def test_npz_writer_without_labels_and_errors(tmp_path):
    with NpzWriter(tmp_path / "u.npz") as writer:
        writer.write(np.zeros((2, 3, 3, 1), np.uint8))
    images, labels = read_npz_images(tmp_path / "u.npz")
    assert images.shape == (2, 3, 3, 1) and labels is None
    with pytest.raises(UserError, match=r"x\.png: expected a file name ending in \.npz"):
        NpzWriter(tmp_path / "x.png")
    writer = NpzWriter(tmp_path / "m.npz")
    writer.write(np.zeros((1, 3, 3, 3), np.uint8))
    with pytest.raises(ValueError, match="differs from earlier"):
        writer.write(np.zeros((1, 4, 4, 3), np.uint8))
    np.savez(tmp_path / "f.npz", np.zeros((1, 2, 2, 3), np.float32))
    with pytest.raises(UserError, match="'arr_0' must be uint8"):
        read_npz_images(tmp_path / "f.npz")
    np.savez(tmp_path / "k.npz", images=np.zeros((1, 2, 2, 3), np.uint8))
    with pytest.raises(UserError, match="expected an ADM sample file with 'arr_0'"):
        read_npz_images(tmp_path / "k.npz")
