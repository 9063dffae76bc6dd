"""Datasets of encoded image files: an image folder (``folder:PATH``) or an EDM/StyleGAN zip (``zip:PATH``).

Both list image files by sorted relative path (EDM's order), read only headers when opened (all
images must have one size unless a resolution is given), and decode lazily per item. Labels come
from ``dataset.json`` (EDM layout: ``{"labels": [[name, label], ...]}`` or ``null``), class
sub-folders, or an ADM-style filename prefix (``?labels=prefix``: the part before the first ``_``).
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from genzoo.data.base import ImageDataset, Spec, center_crop_arr, to_channels
from genzoo.errors import UserError

_GRAYSCALE_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F"}
LABEL_SOURCES = ("auto", "json", "folder", "prefix", "none")


def image_extensions() -> set[str]:
    """Lower-case file extensions PIL can decode (``.png``, ``.jpg``, ...), as EDM's dataset tool uses."""
    Image.init()
    return {ext.lower() for ext in Image.registered_extensions()}


class EncodedImageDataset(ImageDataset):
    """Image files held in a folder or a zip archive, decoded on access."""

    def __init__(self, spec: Spec, root: Path, names: list[str], *, resolution: int | None, skip_bad: bool):
        self.spec_text = spec.text
        self.root = root
        self.description = spec.text
        sizes, modes, kept, self.skipped = {}, set(), [], []
        for name in names:
            try:
                with self._open(name) as stream, Image.open(stream) as pil:
                    if skip_bad:
                        pil.load()
                    sizes.setdefault(pil.size, name)
                    modes.add(pil.mode)
                kept.append(name)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
                if not skip_bad:
                    raise UserError(f"{self.location(name)}: not a readable image ({err}); "
                                    "fix or remove it, or pass --skip-bad to skip unreadable files") from None
                self.skipped.append(name)
        if not kept:
            raise UserError(f"{self.describe_root()}: no readable image files found")
        self.names = kept
        channels = spec.int_option("channels", None, minimum=1)
        if channels not in (None, 1, 3):
            raise UserError(f"dataset spec {spec.text!r}: ?channels= must be 1 or 3, got {channels}")
        self.num_channels = channels or (1 if modes <= _GRAYSCALE_MODES else 3)
        if resolution is None:
            if len(sizes) > 1:
                shown = ", ".join(f"{w}x{h} ({name})" for (w, h), name in list(sizes.items())[:3])
                raise UserError(f"{self.describe_root()}: images of mixed sizes ({shown}); "
                                "give --resolution to resize and centre-crop them")
            (w, h), name = next(iter(sizes.items()))
            if w != h:
                raise UserError(f"{self.location(name)}: images are {w}x{h}, not square; "
                                "give --resolution to centre-crop them")
            resolution = w
        self.resolution = int(resolution)
        self.labels: np.ndarray | None = None
        self.class_names: list[str] | None = None
        self.captions: list[str] | None = None
        self.num_classes = 0

    # -- file access ------------------------------------------------------------------------------
    def _open(self, name: str):
        raise NotImplementedError

    def location(self, name: str) -> str:
        raise NotImplementedError

    def describe_root(self) -> str:
        return str(self.root)

    def __len__(self) -> int:
        return len(self.names)

    def image(self, index: int) -> np.ndarray:
        name = self.names[index]
        try:
            with self._open(name) as stream, Image.open(stream) as pil:
                pil = to_channels(pil, self.num_channels)
                array = np.asarray(pil) if pil.size == (self.resolution,) * 2 else center_crop_arr(
                    pil, self.resolution)
        except (OSError, ValueError, SyntaxError) as err:
            raise UserError(f"{self.location(name)}: not a readable image ({err}); "
                            "fix or remove it, or pass --skip-bad to skip unreadable files") from None
        return array[..., None] if array.ndim == 2 else np.array(array)

    # -- labels -----------------------------------------------------------------------------------
    def set_labels(self, labels: list[int] | np.ndarray | None, class_names: list[str] | None = None,
                   num_classes: int | None = None) -> None:
        if labels is None:
            return
        self.labels = np.asarray(labels, dtype=np.int64)
        self.class_names = class_names
        self.num_classes = num_classes or (int(self.labels.max()) + 1 if len(self.labels) else 0)

    def labels_from_names(self, how: str) -> None:
        """Labels from the first path component (``folder``) or the filename prefix (``prefix``)."""
        if how == "folder":
            parts = [PurePosixPath(n).parts for n in self.names]
            at_root = [n for n, p in zip(self.names, parts) if len(p) < 2]
            if at_root:
                raise UserError(f"{self.location(at_root[0])}: ?labels=folder needs every image inside a "
                                "class sub-folder")
            keys = [p[0] for p in parts]
        else:
            keys = [PurePosixPath(n).name.split("_")[0] for n in self.names]
        class_names = sorted(set(keys))
        index = {k: i for i, k in enumerate(class_names)}
        self.set_labels([index[k] for k in keys], class_names)

    def labels_from_json(self, text: bytes | str, source: str) -> None:
        """Labels (and genzoo's optional ``captions``/``class_names``) from an EDM ``dataset.json``."""
        try:
            meta = json.loads(text)
        except (ValueError, UnicodeDecodeError) as err:
            raise UserError(f"{source}: not valid JSON ({err})") from None
        if not isinstance(meta, dict) or "labels" not in meta:
            raise UserError(f"{source}: expected an object with a 'labels' list (EDM dataset.json)")
        captions = meta.get("captions")
        if captions is not None:
            table = _name_table(captions, source, "captions")
            missing = [n for n in self.names if n not in table]
            if missing:
                raise UserError(f"{source}: no caption for {missing[0]!r}")
            self.captions = [str(table[n]) for n in self.names]
        if meta["labels"] is None:
            return
        table = _name_table(meta["labels"], source, "labels")
        missing = [n for n in self.names if n not in table]
        if missing:
            raise UserError(f"{source}: labels don't match the files: no label for {missing[0]!r} "
                            f"({len(missing)} of {len(self.names)} images unlabeled)")
        extra = sorted(set(table) - set(self.names) - set(self.skipped))
        if extra:
            raise UserError(f"{source}: labels don't match the files: {extra[0]!r} is labeled but is not "
                            f"an image in {self.describe_root()} ({len(extra)} such entries)")
        labels = [_as_class_index(table[n], source, n) for n in self.names]
        class_names = meta.get("class_names")
        num_classes = len(class_names) if isinstance(class_names, list) else None
        if num_classes is not None and labels and max(labels) >= num_classes:
            raise UserError(f"{source}: label {max(labels)} out of range for {num_classes} class_names")
        self.set_labels(labels, class_names if num_classes else None, num_classes)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_zip"] = None  # an open archive does not pickle; each worker reopens it
        return state


def _name_table(entries, source: str, key: str) -> dict:
    if not isinstance(entries, list) or not all(isinstance(e, list) and len(e) == 2 and isinstance(e[0], str)
                                                for e in entries):
        raise UserError(f"{source}: '{key}' must be a list of [file name, value] pairs or null")
    return {name.replace("\\", "/"): value for name, value in entries}


def _as_class_index(value, source: str, name: str) -> int:
    """An integer class label; one-hot vectors (as EDM stores them) become their index."""
    if isinstance(value, bool):
        value = None
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    if isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):
        vector = np.asarray(value, dtype=np.float64)
        if np.count_nonzero(vector) == 1 and vector.max() == 1:
            return int(vector.argmax())
    raise UserError(f"{source}: label of {name!r} is {value!r}; "
                    "expected a class index >= 0 or a one-hot list")


class FolderDataset(EncodedImageDataset):
    """``folder:PATH``: every image under PATH, recursively."""

    def __init__(self, spec: Spec, resolution: int | None, skip_bad: bool):
        spec.check_options(["labels", "channels"])
        how = spec.option("labels", LABEL_SOURCES, "auto")
        root = Path(spec.arg or "")
        if not spec.arg or not root.is_dir():
            raise UserError(f"dataset spec {spec.text!r}: {root} is not a directory (expected folder:PATH)")
        extensions = image_extensions()
        names = sorted(Path(dirpath, f).relative_to(root).as_posix()
                       for dirpath, _, files in os.walk(root, followlinks=True) for f in files
                       if os.path.splitext(f)[1].lower() in extensions)
        if not names:
            raise UserError(f"{root}: no image files found (looked recursively for .png, .jpg, .jpeg, "
                            ".webp and the other formats PIL reads)")
        super().__init__(spec, root, names, resolution=resolution, skip_bad=skip_bad)
        json_path = root / "dataset.json"
        if how == "auto":
            how = "json" if json_path.is_file() else (
                "folder" if all("/" in n for n in self.names) else "none")
        if how == "json":
            if not json_path.is_file():
                raise UserError(f"{json_path}: no such file (?labels=json)")
            self.labels_from_json(json_path.read_bytes(), str(json_path))
        elif how in ("folder", "prefix"):
            self.labels_from_names(how)

    def _open(self, name: str):
        return open(self.root / name, "rb")

    def location(self, name: str) -> str:
        return str(self.root / name)


class ZipDataset(EncodedImageDataset):
    """``zip:PATH``: an EDM/StyleGAN dataset archive (images + optional ``dataset.json``)."""

    def __init__(self, spec: Spec, resolution: int | None, skip_bad: bool):
        spec.check_options(["labels", "channels"])
        how = spec.option("labels", LABEL_SOURCES, "auto")
        path = Path(spec.arg or "")
        if not spec.arg or not path.is_file():
            raise UserError(f"dataset spec {spec.text!r}: {path} is not a file (expected zip:PATH.zip)")
        self.root = path
        self._zip: zipfile.ZipFile | None = None
        self._zip_pid = os.getpid()
        try:
            all_names = self._archive().namelist()
        except (zipfile.BadZipFile, OSError) as err:
            raise UserError(f"{path}: not a readable zip archive ({err})") from None
        extensions = image_extensions()
        names = sorted(n for n in all_names
                       if not n.endswith("/") and os.path.splitext(n)[1].lower() in extensions)
        if not names:
            raise UserError(f"{path}: no image files in the archive")
        super().__init__(spec, path, names, resolution=resolution, skip_bad=skip_bad)
        has_json = "dataset.json" in all_names
        if how == "auto":
            how = "json" if has_json else "none"
        if how == "json":
            if not has_json:
                raise UserError(f"{path}: no dataset.json in the archive (?labels=json)")
            self.labels_from_json(self._archive().read("dataset.json"), f"{path}:dataset.json")
        elif how in ("folder", "prefix"):
            self.labels_from_names(how)

    def _archive(self) -> zipfile.ZipFile:
        # A forked DataLoader worker must not share the parent's file offset: reopen per process.
        if self._zip is None or self._zip_pid != os.getpid():
            self._zip = zipfile.ZipFile(self.root)
            self._zip_pid = os.getpid()
        return self._zip

    def _open(self, name: str):
        return io.BytesIO(self._archive().read(name))

    def location(self, name: str) -> str:
        return f"{self.root}:{name}"
