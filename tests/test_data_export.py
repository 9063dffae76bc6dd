"""`export` round-trips every format bit-exactly; the `genzoo data` CLI; DataLoader workers."""

import json
import pickle
import struct
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from genzoo.cli import main
from genzoo.data import load_dataset
from genzoo.data.export import edm_archive_name, export_dataset
from genzoo.errors import UserError

RNG = np.random.default_rng(1)


def _source_spec(kind, root):
    """Write a tiny dataset of the given kind under ``root`` and return its spec."""
    if kind == "shapes":
        return "shapes:16?count=12"
    if kind == "digits":
        return "digits:8"
    images = RNG.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    labels = np.array([2, 0, 1, 2, 1, 0])
    if kind == "folder":
        for i, (image, label) in enumerate(zip(images, labels)):
            (root / f"class{label}").mkdir(exist_ok=True)
            Image.fromarray(image).save(root / f"class{label}" / f"{i}.png")
        return f"folder:{root}"
    if kind == "npz":
        np.savez(root / "x.npz", images, labels)
        return f"npz:{root / 'x.npz'}"
    if kind == "zip":
        export_dataset(load_dataset(_source_spec("npz", root)), root / "x.zip")
        return f"zip:{root / 'x.zip'}"
    if kind == "cifar10":
        big = RNG.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
        for i in range(5):
            data = {b"data": big[i:i + 1].transpose(0, 3, 1, 2).reshape(1, -1), b"labels": [i]}
            (root / f"data_batch_{i + 1}").write_bytes(pickle.dumps(data, protocol=2))
        return f"cifar10:{root}"
    if kind == "mnist":
        digits = RNG.integers(0, 256, (4, 28, 28), dtype=np.uint8)
        for name, array in [("train-images-idx3-ubyte", digits), ("train-labels-idx1-ubyte", np.arange(4))]:
            array = array.astype(np.uint8)
            header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
            (root / name).write_bytes(header + array.tobytes())
        return f"mnist:{root}"
    raise ValueError(kind)


def _all(dataset, limit=None):
    n = len(dataset) if limit is None else limit
    return torch.stack([dataset[i][0] for i in range(n)]), [dataset[i][1] for i in range(n)]


@pytest.mark.parametrize("kind", ["shapes", "digits", "folder", "zip", "npz", "cifar10", "mnist"])
def test_export_round_trips_bit_exactly(tmp_path, kind):
    (tmp_path / "src").mkdir()
    source = load_dataset(_source_spec(kind, tmp_path / "src"))
    limit = 40 if kind == "digits" else None
    images, labels = _all(source, limit)
    for suffix in (".zip", ".npz"):
        out = tmp_path / f"out{suffix}"
        assert export_dataset(source, out, batch_size=5, limit=limit) == len(images)
        back = load_dataset(f"{suffix[1:]}:{out}")
        got, got_labels = _all(back)
        assert torch.equal(got, images) and got_labels == labels
        classes = source.num_classes if suffix == ".zip" else max(labels) + 1  # npz has no class count
        assert (back.resolution, back.num_channels, back.num_classes) == (
            source.resolution, source.num_channels, classes)
        # and back again into the other format
        again = tmp_path / f"again{'.npz' if suffix == '.zip' else '.zip'}"
        export_dataset(back, again)
        assert torch.equal(_all(load_dataset(f"{again.suffix[1:]}:{again}"))[0], images)


def test_zip_export_layout_captions_and_unlabeled(tmp_path):
    shapes = load_dataset("shapes:16?count=3")
    export_dataset(shapes, tmp_path / "s.zip")
    with zipfile.ZipFile(tmp_path / "s.zip") as archive:
        meta = json.loads(archive.read("dataset.json"))
        assert sorted(archive.namelist()) == ["00000/img00000000.png", "00000/img00000001.png",
                                              "00000/img00000002.png", "dataset.json"]
    assert meta["labels"] == [[edm_archive_name(i), int(shapes.labels[i])] for i in range(3)]
    assert edm_archive_name(123456) == "00123/img00123456.png"
    back = load_dataset(f"zip:{tmp_path / 's.zip'}")
    assert list(back.captions) == list(shapes.captions) and back.class_names == shapes.class_names
    np.savez(tmp_path / "u.npz", RNG.integers(0, 256, (2, 4, 4, 3), dtype=np.uint8))
    unlabeled = load_dataset(f"npz:{tmp_path / 'u.npz'}")
    export_dataset(unlabeled, tmp_path / "u.zip")
    export_dataset(unlabeled, tmp_path / "u2.npz")
    with zipfile.ZipFile(tmp_path / "u.zip") as archive:
        assert json.loads(archive.read("dataset.json"))["labels"] is None
    with np.load(tmp_path / "u2.npz") as data:
        assert data.files == ["arr_0"]
    with pytest.raises(UserError, match=r"out\.png: expected an output name ending in \.zip"):
        export_dataset(unlabeled, tmp_path / "out.png")


def test_dataloader_workers(tmp_path):
    (tmp_path / "src").mkdir()
    spec = _source_spec("zip", tmp_path / "src")
    for dataset in (load_dataset(spec), load_dataset(f"npz:{tmp_path / 'src' / 'x.npz'}"),
                    load_dataset("shapes:8?count=6")):
        dataset[0]  # opens the archive in this process first
        loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=2)
        images = torch.cat([batch[0] for batch in loader])
        assert torch.equal(images, _all(dataset)[0])


def test_zip_reopened_in_a_forked_process(tmp_path, monkeypatch):
    (tmp_path / "src").mkdir()
    dataset = load_dataset(_source_spec("zip", tmp_path / "src"))
    first = dataset._archive()
    assert dataset._archive() is first
    monkeypatch.setattr("os.getpid", lambda: -1)  # as seen from a forked worker
    assert dataset._archive() is not first and torch.equal(dataset[2][0], _all(dataset)[0][2])


def test_cli_info_and_export(tmp_path, capsys):
    grid = tmp_path / "grid.png"
    assert main(["data", "info", "shapes:16?count=10", "--grid", str(grid), "--grid-count", "4"]) == 0
    out = capsys.readouterr().out
    assert "items:      10" in out and "resolution: 16" in out and "classes:    16 (red circle" in out
    assert f"grid:       {grid}" in out
    # 4 images of 16 px, 2 per row with 2 px padding, the whole grid enlarged 4x: (2 * 18 + 2) * 4
    assert Image.open(grid).size == (152, 152)
    assert main(["data", "export", "shapes:16?count=10", str(tmp_path / "s.npz"), "--max-items", "7"]) == 0
    assert "wrote 7 images (16x16, 3 channel(s), 16 classes)" in capsys.readouterr().out
    with np.load(tmp_path / "s.npz") as data:
        assert data["arr_0"].shape == (7, 16, 16, 3) and data["arr_1"].shape == (7,)


def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys):
    (tmp_path / "bad.png").write_bytes(b"garbage")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "good.png")
    assert main(["data", "info", f"folder:{tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("genzoo data: error:") and "bad.png: not a readable image" in err
    assert "\n" not in err
    assert main(["data", "info", f"folder:{tmp_path}", "--skip-bad"]) == 0
    assert "skipped:    1 unreadable file(s)" in capsys.readouterr().out
    assert main(["data", "export", "nosuch:x", str(tmp_path / "o.zip")]) == 2
    assert "unknown kind 'nosuch'" in capsys.readouterr().err
    assert main(["data", "export", "shapes", str(tmp_path / "o.zip"), "--batch", "0"]) == 2
    assert "--batch: expected an integer >= 1" in capsys.readouterr().err
