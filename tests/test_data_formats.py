"""Every dataset format, built from tiny files written here: exact pixels, labels, and bad input."""

import gzip
import io
import json
import os
import pickle
import struct
import tarfile
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from genzoo.data import center_crop_arr, load_dataset
from genzoo.errors import UserError

RNG = np.random.default_rng(0)


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[2] == 1 else array).save(path)


def _images(n, size=8, channels=3):
    return RNG.integers(0, 256, (n, size, size, channels), dtype=np.uint8)


def _all(dataset):
    images = np.stack([dataset[i][0].numpy().transpose(1, 2, 0) for i in range(len(dataset))])
    return images, np.array([dataset[i][1] for i in range(len(dataset))])


# -- folder ---------------------------------------------------------------------------------------

def test_folder_class_subfolders(tmp_path):
    images = _images(5)
    names = ["cat/b.png", "cat/sub/a.png", "dog/a.png", "dog/c.png", "eel/x.png"]
    for name, image in zip(names, images):
        _png(tmp_path / name, image)
    (tmp_path / "notes.txt").write_text("not an image")
    ds = load_dataset(f"folder:{tmp_path}")
    got, labels = _all(ds)
    assert (len(ds), ds.resolution, ds.num_channels, ds.num_classes) == (5, 8, 3, 3)
    assert ds.class_names == ["cat", "dog", "eel"]
    assert np.array_equal(got, images) and labels.tolist() == [0, 0, 1, 1, 2]
    assert np.array_equal(_all(load_dataset(str(tmp_path)))[0], images)  # kind inferred from the path


def test_folder_prefix_labels_unlabeled_and_channels(tmp_path):
    images = _images(3)
    for name, image in zip(["dog_1.png", "cat_2.png", "dog_3.png"], images):
        _png(tmp_path / name, image)
    ds = load_dataset(f"folder:{tmp_path}?labels=prefix")
    assert ds.class_names == ["cat", "dog"]
    got, labels = _all(ds)  # sorted names: cat_2, dog_1, dog_3
    assert np.array_equal(got, images[[1, 0, 2]]) and labels.tolist() == [0, 1, 1]
    plain = load_dataset(f"folder:{tmp_path}")
    assert plain.num_classes == 0 and plain[0][1] == -1
    gray = load_dataset(f"folder:{tmp_path}?channels=1")
    expected = np.asarray(Image.fromarray(images[1]).convert("L"))
    assert gray.num_channels == 1 and np.array_equal(gray[0][0][0].numpy(), expected)
    with pytest.raises(UserError, match="labels=folder needs every image inside a class sub-folder"):
        load_dataset(f"folder:{tmp_path}?labels=folder")


def test_folder_grayscale_and_rgba_conversion(tmp_path):
    gray = _images(1, channels=1)[0]
    rgba = RNG.integers(0, 256, (8, 8, 4), dtype=np.uint8)
    _png(tmp_path / "g" / "a.png", gray)
    assert load_dataset(f"folder:{tmp_path}").num_channels == 1
    Image.fromarray(rgba, "RGBA").save(tmp_path / "g" / "b.png")
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.num_channels == 3
    assert np.array_equal(ds[0][0].numpy(), np.repeat(gray.transpose(2, 0, 1), 3, 0))  # gray repeated
    assert np.array_equal(ds[1][0].numpy(), rgba[..., :3].transpose(2, 0, 1))  # alpha dropped (ADM)


def test_sixteen_bit_grayscale_scaled(tmp_path):
    deep = np.array([[0, 257, 65535, 257 * 100]], dtype=np.uint16).repeat(4, 0)
    Image.fromarray(deep).save(tmp_path / "d.png")
    assert Image.open(tmp_path / "d.png").mode.startswith("I")
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.num_channels == 1 and ds[0][0][0, 0].tolist() == [0, 1, 255, 100]


def test_mixed_sizes_need_resolution_and_center_crop_semantics(tmp_path):
    big = RNG.integers(0, 256, (60, 100, 3), dtype=np.uint8)
    _png(tmp_path / "a.png", big)
    _png(tmp_path / "b.png", _images(1, 16)[0])
    with pytest.raises(UserError, match=r"mixed sizes.*--resolution"):
        load_dataset(f"folder:{tmp_path}")
    ds = load_dataset(f"folder:{tmp_path}", resolution=16)
    # ADM: box-halve while the short side is >= 2x the target (60 -> 30), bicubic to 16 (50x30 -> 27x16),
    # then crop the centre ((27 - 16) // 2 = 5 columns off the left).
    step = Image.fromarray(big).resize((50, 30), Image.BOX).resize((27, 16), Image.BICUBIC)
    expected = np.asarray(step)[:, 5:21]
    assert np.array_equal(ds[0][0].numpy().transpose(1, 2, 0), expected)
    assert np.array_equal(center_crop_arr(Image.fromarray(big), 16), expected)


def test_non_square_without_resolution(tmp_path):
    _png(tmp_path / "a.png", RNG.integers(0, 256, (8, 12, 3), dtype=np.uint8))
    with pytest.raises(UserError, match="12x8, not square"):
        load_dataset(f"folder:{tmp_path}")


def test_corrupt_and_truncated_images(tmp_path):
    for i, image in enumerate(_images(3)):
        _png(tmp_path / f"img{i}.png", image)
    (tmp_path / "img9.png").write_bytes(b"definitely not a png")
    with pytest.raises(UserError, match=r"img9\.png: not a readable image.*--skip-bad"):
        load_dataset(f"folder:{tmp_path}")
    ds = load_dataset(f"folder:{tmp_path}", skip_bad=True)
    assert len(ds) == 3 and ds.skipped == ["img9.png"]
    # A PNG whose header is fine but whose data is cut: found when decoded, or skipped at scan time.
    data = (tmp_path / "img1.png").read_bytes()
    (tmp_path / "img1.png").write_bytes(data[:60])
    (tmp_path / "img9.png").unlink()
    ds = load_dataset(f"folder:{tmp_path}")
    with pytest.raises(UserError, match=r"img1\.png: not a readable image"):
        ds[1]
    assert load_dataset(f"folder:{tmp_path}", skip_bad=True).skipped == ["img1.png"]


def test_missing_paths_and_empty_folder(tmp_path):
    cases = [(f"folder:{tmp_path}/nope", "not a directory"), ("folder:", "not a directory"),
             (f"zip:{tmp_path}/x.zip", "not a file"), (f"npz:{tmp_path}/x.npz", "does not exist"),
             (f"cifar10:{tmp_path}/c", "does not exist"), (f"mnist:{tmp_path}/m", "does not exist"),
             (f"folder:{tmp_path}", "no image files"), (f"{tmp_path}/x.zip", "no such file or directory")]
    for spec, message in cases:
        with pytest.raises(UserError, match=message):
            load_dataset(spec)


# -- zip ------------------------------------------------------------------------------------------

def _write_zip(path, images, names, meta):
    with zipfile.ZipFile(path, "w") as archive:
        for name, image in zip(names, images):
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="PNG")
            archive.writestr(name, buffer.getvalue())
        if meta is not None:
            archive.writestr("dataset.json", meta if isinstance(meta, str) else json.dumps(meta))


def test_zip_with_labels(tmp_path):
    images = _images(4)
    names = [f"00000/img0000000{i}.png" for i in range(4)]
    labels = [3, 0, 2, 3]
    meta = {"labels": [[n, lab] for n, lab in reversed(list(zip(names, labels)))]}
    _write_zip(tmp_path / "d.zip", images, names, meta)
    ds = load_dataset(f"zip:{tmp_path / 'd.zip'}")
    got, got_labels = _all(ds)
    assert np.array_equal(got, images) and got_labels.tolist() == labels and ds.num_classes == 4
    # EDM may store one-hot label vectors; they become class indices.
    onehot = {"labels": [[n, np.eye(4, dtype=int)[lab].tolist()] for n, lab in zip(names, labels)]}
    _write_zip(tmp_path / "o.zip", images, names, onehot)
    assert _all(load_dataset(f"zip:{tmp_path / 'o.zip'}"))[1].tolist() == labels
    _write_zip(tmp_path / "u.zip", images, names, {"labels": None})
    assert load_dataset(f"zip:{tmp_path / 'u.zip'}").num_classes == 0


@pytest.mark.parametrize("meta, message", [
    ("{not json", r"dataset\.json: not valid JSON"),
    ({"labels": 3}, "'labels' must be a list of"),
    ({"nolabels": []}, "expected an object with a 'labels' list"),
    ({"labels": [["a.png", 0]]}, r"labels don't match the files: no label for 'b\.png'"),
    ({"labels": [["a.png", 0], ["b.png", 1], ["c.png", 1]]}, r"'c\.png' is labeled but is not an image"),
    ({"labels": [["a.png", 0], ["b.png", -2]]}, "expected a class index"),
])
def test_zip_bad_dataset_json(tmp_path, meta, message):
    _write_zip(tmp_path / "d.zip", _images(2), ["a.png", "b.png"], meta)
    with pytest.raises(UserError, match=message):
        load_dataset(f"zip:{tmp_path / 'd.zip'}")


def test_zip_not_a_zip_and_corrupt_member(tmp_path):
    (tmp_path / "x.zip").write_bytes(b"garbage")
    with pytest.raises(UserError, match=r"x\.zip: not a readable zip archive"):
        load_dataset(f"zip:{tmp_path / 'x.zip'}")
    with zipfile.ZipFile(tmp_path / "c.zip", "w") as archive:
        archive.writestr("bad.png", b"nope")
    with pytest.raises(UserError, match=r"c\.zip:bad\.png: not a readable image"):
        load_dataset(f"zip:{tmp_path / 'c.zip'}")


# -- npz ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz(tmp_path, save):
    images, labels = _images(5), np.array([4, 1, 1, 0, 2])
    save(tmp_path / "s.npz", images, labels)
    ds = load_dataset(f"npz:{tmp_path / 's.npz'}")
    got, got_labels = _all(ds)
    assert np.array_equal(got, images) and got_labels.tolist() == labels.tolist() and ds.num_classes == 5
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[3][0], ds[3][0])
    assert np.array_equal(_all(load_dataset(str(tmp_path / "s.npz")))[0], images)  # inferred kind
    save(tmp_path / "u.npz", images)
    assert load_dataset(f"npz:{tmp_path / 'u.npz'}").num_classes == 0


def test_npz_bad(tmp_path):
    np.savez(tmp_path / "f.npz", np.zeros((2, 4, 4, 3), np.float32))
    np.savez(tmp_path / "k.npz", images=_images(2))
    np.savez(tmp_path / "l.npz", _images(2), np.array([0, 1, 2]))
    (tmp_path / "g.npz").write_bytes(b"garbage")
    for name, message in [("f", r"expected uint8 images \[N, H, W, C\]"), ("k", "no 'arr_0' array"),
                          ("l", "3 labels for 2 images"), ("g", "not a readable .npz")]:
        with pytest.raises(UserError, match=message):
            load_dataset(f"npz:{tmp_path / name}.npz")


# -- CIFAR-10 -------------------------------------------------------------------------------------

def _cifar_batch(images, labels):
    data = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    return pickle.dumps({b"batch_label": b"x", b"labels": [int(v) for v in labels], b"data": data,
                         b"filenames": [b"f"] * len(images)}, protocol=2)


def _write_cifar(root):
    images = RNG.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    labels = RNG.integers(0, 10, 12)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(5):
        part = slice(2 * i, 2 * i + 2)
        (folder / f"data_batch_{i + 1}").write_bytes(_cifar_batch(images[part], labels[part]))
    (folder / "test_batch").write_bytes(_cifar_batch(images[10:], labels[10:]))
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as archive:
        archive.add(folder, arcname="cifar-10-batches-py")
    return folder, images, labels


def test_cifar10_folder_and_targz(tmp_path):
    folder, images, labels = _write_cifar(tmp_path)
    for path in (folder, tmp_path, tmp_path / "cifar-10-python.tar.gz"):
        ds = load_dataset(f"cifar10:{path}")
        got, got_labels = _all(ds)
        assert np.array_equal(got, images[:10]) and got_labels.tolist() == labels[:10].tolist()
        assert ds.num_classes == 10 and ds.class_names[0] == "airplane"
    for path in (folder, tmp_path / "cifar-10-python.tar.gz"):  # kind inferred from the path
        assert np.array_equal(_all(load_dataset(str(path)))[0], images[:10])
    test = load_dataset(f"cifar10:{folder}?split=test")
    assert np.array_equal(_all(test)[0], images[10:])


def test_cifar10_refuses_code_and_non_batches(tmp_path):
    folder, _, _ = _write_cifar(tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (folder / "data_batch_2").write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(UserError, match=r"data_batch_2: not a CIFAR-10 batch \(the pickle refers to "
                                        r"(posix|os|nt)\.system, which is not allowed"):
        load_dataset(f"cifar10:{folder}")
    assert not marker.exists()
    (folder / "data_batch_2").write_bytes(b"plain text")
    with pytest.raises(UserError, match="data_batch_2: not a CIFAR-10 batch"):
        load_dataset(f"cifar10:{folder}")
    (folder / "data_batch_2").write_bytes(pickle.dumps({b"data": np.zeros((2, 5), np.uint8)}, protocol=2))
    with pytest.raises(UserError, match=r"'data' must be uint8 \[N, 3072\]"):
        load_dataset(f"cifar10:{folder}")
    (folder / "data_batch_2").unlink()
    with pytest.raises(UserError, match="no data_batch_2"):
        load_dataset(f"cifar10:{folder}")


# -- MNIST ----------------------------------------------------------------------------------------

def _idx(array, dims):
    return struct.pack(">HBB", 0, 8, dims) + struct.pack(f">{dims}I", *array.shape) + array.tobytes()


def test_mnist_plain_and_gz(tmp_path):
    images = RNG.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    labels = np.array([7, 0, 9], dtype=np.uint8)
    files = [("train-images-idx3-ubyte", _idx(images, 3)), ("train-labels-idx1-ubyte", _idx(labels, 1))]
    for name, data in files:
        (tmp_path / "plain").mkdir(exist_ok=True)
        (tmp_path / "plain" / name).write_bytes(data)
        (tmp_path / "gz").mkdir(exist_ok=True)
        (tmp_path / "gz" / f"{name.replace('train', 't10k')}.gz").write_bytes(gzip.compress(data))
    for spec in (f"mnist:{tmp_path / 'plain'}", f"mnist:{tmp_path / 'gz'}?split=test"):
        ds = load_dataset(spec)
        got, got_labels = _all(ds)
        assert ds.num_channels == 1 and ds.resolution == 28
        assert np.array_equal(got[..., 0], images) and got_labels.tolist() == [7, 0, 9]
    assert load_dataset(str(tmp_path / "plain")).num_channels == 1  # kind inferred from the path


def test_mnist_bad_idx(tmp_path):
    images = RNG.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    good_labels = _idx(np.array([1, 2, 3], np.uint8), 1)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(good_labels)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(struct.pack(">HBB", 0, 8, 1) + _idx(images, 3)[4:])
    with pytest.raises(UserError, match=r"train-images-idx3-ubyte: bad idx magic number 0x00000801; "
                                        r"expected 0x00000803"):
        load_dataset(f"mnist:{tmp_path}")
    (tmp_path / "train-images-idx3-ubyte").write_bytes(_idx(images, 3)[:-5])
    with pytest.raises(UserError, match=r"idx file length 2363 bytes does not match its header "
                                        r"\(shape \(3, 28, 28\) needs 2368"):
        load_dataset(f"mnist:{tmp_path}")
    (tmp_path / "train-images-idx3-ubyte").write_bytes(_idx(images[:2], 3))
    with pytest.raises(UserError, match="3 labels for 2 images"):
        load_dataset(f"mnist:{tmp_path}")
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(UserError, match="no train-labels-ubyte file"):
        load_dataset(f"mnist:{tmp_path}")


# -- digits ---------------------------------------------------------------------------------------

def test_digits():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    native = load_dataset("digits:8")
    got, labels = _all(native)
    assert got.shape == (1797, 8, 8, 1) and labels.tolist() == bunch.target.tolist()
    assert np.array_equal(got[..., 0], np.round(bunch.images * 255 / 16).astype(np.uint8))
    up = load_dataset("digits")
    assert (up.resolution, up.num_channels, up.num_classes, len(up)) == (32, 1, 10, 1797)
    assert load_dataset("digits?channels=3", resolution=16)[0][0].shape == (3, 16, 16)
