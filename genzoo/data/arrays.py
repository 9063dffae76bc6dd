"""Datasets stored as pixel arrays: ADM ``.npz``, CIFAR-10 python pickles, MNIST idx files, sklearn digits.

Nothing here calls ``pickle.load``: CIFAR-10 batches go through
:func:`genzoo.checkpoints.numpy_pickle.load_numpy_pickle`, which only resolves the numpy names an
array needs and rejects everything else.
"""

from __future__ import annotations

import gzip
import importlib.util
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np

from genzoo.checkpoints.numpy_pickle import load_numpy_pickle
from genzoo.data.base import ArrayDataset, Spec, resize_array
from genzoo.errors import UserError


def _channels_option(spec: Spec) -> int | None:
    channels = spec.int_option("channels", None, minimum=1)
    if channels not in (None, 1, 3):
        raise UserError(f"dataset spec {spec.text!r}: ?channels= must be 1 or 3, got {channels}")
    return channels


def _existing(spec: Spec, usage: str) -> Path:
    if not spec.arg:
        raise UserError(f"dataset spec {spec.text!r}: expected {usage}")
    path = Path(spec.arg)
    if not path.exists():
        raise UserError(f"dataset spec {spec.text!r}: {path} does not exist (expected {usage})")
    return path


# -- npz ------------------------------------------------------------------------------------------

def _stored_npy(path: Path, member: str) -> tuple[np.dtype, tuple[int, ...], int] | None:
    """(dtype, shape, byte offset) of an uncompressed ``.npy`` member, so it can be memory-mapped."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
        if info.compress_type != zipfile.ZIP_STORED:
            return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if local[:4] != b"PK\x03\x04":
            return None
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        if fortran or dtype.hasobject:
            return None
        return dtype, shape, f.tell()


class NpzDataset(ArrayDataset):
    """``npz:PATH``: ``arr_0`` uint8 NHWC images (+ ``arr_1`` labels), the ADM sample layout.

    Uncompressed files (as ``np.savez`` and :class:`~genzoo.io.NpzWriter` write them) are
    memory-mapped, so a reference batch of any size opens instantly and pickles cheaply.
    """

    def __init__(self, spec: Spec, resolution: int | None, skip_bad: bool):
        spec.check_options(["channels"])
        path = _existing(spec, "npz:PATH.npz")
        try:
            with np.load(path, allow_pickle=False) as data:
                if "arr_0" not in data.files:
                    found = ", ".join(data.files) or "nothing"
                    raise UserError(f"{path}: no 'arr_0' array; expected ADM layout (arr_0 uint8 NHWC "
                                    f"images, optional arr_1 labels), found {found}")
                labels = data["arr_1"] if "arr_1" in data.files else None
            layout = _stored_npy(path, "arr_0.npy")
            if layout is not None and layout[0] == np.uint8 and len(layout[1]) == 4:
                images = np.memmap(path, dtype=np.uint8, mode="r", shape=layout[1], offset=layout[2])
                self._mmap = (str(path), layout[1], layout[2])
            else:
                with np.load(path, allow_pickle=False) as data:
                    images = data["arr_0"]
                self._mmap = None
        except (OSError, ValueError, zipfile.BadZipFile, KeyError) as err:
            raise UserError(f"{path}: not a readable .npz file ({err})") from None
        if labels is not None and (labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer)):
            raise UserError(f"{path}: 'arr_1' must be integer labels [N], got {labels.dtype} {labels.shape}")
        super().__init__(images, labels, resolution=resolution, channels=_channels_option(spec),
                         description=spec.text, source=str(path))

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self._mmap is not None:
            state["images"] = None  # reopened lazily in the worker instead of copying the array
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.images is None:
            path, shape, offset = self._mmap
            self.images = np.memmap(path, dtype=np.uint8, mode="r", shape=shape, offset=offset)


# -- CIFAR-10 -------------------------------------------------------------------------------------

def read_cifar_batch(data: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 NHWC images, int64 labels) from one CIFAR-10 python batch, unpickled restrictedly."""
    batch = load_numpy_pickle(data, source, "a CIFAR-10 batch")
    if not isinstance(batch, dict):
        raise UserError(f"{source}: not a CIFAR-10 batch (expected a dict, got {type(batch).__name__})")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    pixels, labels = batch.get("data"), batch.get("labels")
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 2 \
            or pixels.shape[1] != 3072:
        shown = f"{pixels.dtype} {pixels.shape}" if isinstance(pixels, np.ndarray) else type(pixels).__name__
        raise UserError(f"{source}: not a CIFAR-10 batch ('data' must be uint8 [N, 3072], got {shown})")
    labels = np.asarray(labels if labels is not None else [], dtype=np.int64).reshape(-1)
    if len(labels) != len(pixels) or (len(labels) and (labels.min() < 0 or labels.max() > 9)):
        raise UserError(f"{source}: not a CIFAR-10 batch ('labels' must be {len(pixels)} ints in 0..9)")
    return pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _cifar_members(path: Path, names: list[str]) -> list[tuple[str, bytes]]:
    """Read batch files by base name from an extracted folder or the downloaded ``.tar.gz``."""
    if path.is_dir():
        found = []
        for name in names:
            matches = sorted(path.rglob(name))
            if not matches:
                raise UserError(f"{path}: no {name} (expected the extracted cifar-10-batches-py folder)")
            found.append((str(matches[0]), matches[0].read_bytes()))
        return found
    try:
        with tarfile.open(path, "r:*") as archive:
            members = {Path(m.name).name: m for m in archive.getmembers() if m.isfile()}
            found = []
            for name in names:
                if name not in members:
                    raise UserError(f"{path}: no {name} in the archive (expected cifar-10-python.tar.gz)")
                found.append((f"{path}:{members[name].name}", archive.extractfile(members[name]).read()))
            return found
    except (tarfile.TarError, OSError, EOFError) as err:
        raise UserError(f"{path}: not a readable CIFAR-10 folder or .tar.gz ({err})") from None


def load_cifar10(spec: Spec, resolution: int | None, skip_bad: bool) -> ArrayDataset:
    """``cifar10:PATH[?split=train|test]`` — the CIFAR-10 python version (folder or ``.tar.gz``)."""
    spec.check_options(["split", "channels"])
    split = spec.option("split", ("train", "test"), "train")
    path = _existing(spec, "cifar10:PATH (cifar-10-batches-py folder or cifar-10-python.tar.gz)")
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    parts = [read_cifar_batch(data, source) for source, data in _cifar_members(path, names)]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return ArrayDataset(images, labels, resolution=resolution, channels=_channels_option(spec),
                        num_classes=10, class_names=list(CIFAR10_CLASSES), description=spec.text,
                        source=str(path))


# -- MNIST ----------------------------------------------------------------------------------------

def read_idx(data: bytes, source: str, expect_dims: int) -> np.ndarray:
    """A uint8 idx array (magic ``0x0000_08_0D``: unsigned bytes, D dimensions, big-endian sizes)."""
    if len(data) < 4:
        raise UserError(f"{source}: not an idx file (only {len(data)} bytes)")
    zero, dtype_code, dims = struct.unpack(">HBB", data[:4])
    expected_magic = 0x0800 + expect_dims
    if zero != 0 or dtype_code != 0x08 or dims != expect_dims:
        raise UserError(f"{source}: bad idx magic number 0x{int.from_bytes(data[:4], 'big'):08x}; "
                        f"expected 0x{expected_magic:08x} (unsigned bytes, {expect_dims} dimension(s))")
    header = 4 + 4 * dims
    if len(data) < header:
        raise UserError(f"{source}: idx header truncated ({len(data)} bytes, expected at least {header})")
    shape = struct.unpack(f">{dims}I", data[4:header])
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise UserError(f"{source}: idx file length {len(data)} bytes does not match its header "
                        f"(shape {shape} needs {expected} bytes)")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _read_maybe_gz(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise UserError(f"{path}: corrupt gzip file ({err})") from None
    return raw


def _find_idx(root: Path, prefix: str, kind: str) -> Path:
    """``train-images-idx3-ubyte`` (or ``.gz``, or ``train-images.idx3-ubyte``) under ``root``."""
    candidates = sorted(p for p in root.iterdir() if p.is_file() and p.name.startswith(prefix)
                        and kind in p.name)
    if not candidates:
        raise UserError(f"{root}: no {prefix}-{kind}-ubyte file (plain or .gz); "
                        "expected the four MNIST idx files")
    return candidates[0]


def load_mnist(spec: Spec, resolution: int | None, skip_bad: bool) -> ArrayDataset:
    """``mnist:PATH[?split=train|test]`` — the MNIST idx files in a folder, plain or gzipped."""
    spec.check_options(["split", "channels"])
    split = spec.option("split", ("train", "test"), "train")
    root = _existing(spec, "mnist:PATH (folder with the MNIST idx files)")
    if not root.is_dir():
        raise UserError(f"dataset spec {spec.text!r}: {root} is not a directory (expected the MNIST folder)")
    prefix = "train" if split == "train" else "t10k"
    image_path, label_path = _find_idx(root, prefix, "images"), _find_idx(root, prefix, "labels")
    images = read_idx(_read_maybe_gz(image_path), str(image_path), 3)
    labels = read_idx(_read_maybe_gz(label_path), str(label_path), 1)
    if len(images) != len(labels):
        raise UserError(f"{label_path}: {len(labels)} labels for {len(images)} images in {image_path}")
    return ArrayDataset(images[..., None], labels, resolution=resolution, channels=_channels_option(spec),
                        num_classes=10, class_names=[str(d) for d in range(10)], description=spec.text,
                        source=str(image_path))


# -- scikit-learn digits --------------------------------------------------------------------------

def load_digits(spec: Spec, resolution: int | None, skip_bad: bool) -> ArrayDataset:
    """``digits[:RES]`` — scikit-learn's 1,797 8x8 handwritten digits, upscaled (bicubic) to RES (32)."""
    spec.check_options(["channels"])
    if spec.arg:
        try:
            res = int(spec.arg)
        except ValueError:
            raise UserError(f"dataset spec {spec.text!r}: expected digits:RES with an integer RES") from None
        if resolution is not None and resolution != res:
            raise UserError(f"dataset spec {spec.text!r} says {res} px but --resolution is {resolution}")
        resolution = res
    resolution = resolution or 32
    if resolution < 4:
        raise UserError(f"dataset spec {spec.text!r}: resolution must be at least 4, got {resolution}")
    pixels, target = _sklearn_digits()
    small = np.round(pixels.reshape(-1, 8, 8) * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[..., None]
    images = np.stack([resize_array(im, resolution) for im in small])
    return ArrayDataset(images, target, resolution=resolution, channels=_channels_option(spec),
                        num_classes=10, class_names=[str(d) for d in range(10)], description=spec.text,
                        source="digits")


def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """(pixels [1797, 64] in 0..16, labels) read from scikit-learn's bundled ``digits.csv.gz``.

    Reading the file directly skips importing ``sklearn.datasets`` (about two seconds).
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("dataset 'digits' needs scikit-learn: pip install 'genzoo[data]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        from sklearn.datasets import load_digits as sklearn_digits
        bunch = sklearn_digits()
        return bunch.data, bunch.target
    table = np.loadtxt(path, delimiter=",")
    return table[:, :-1], table[:, -1].astype(np.int64)
