"""The one output rule of every command that writes: all or nothing.

An output is written to a uniquely named hidden temporary beside its target and renamed into place
only when the command succeeds; on an exception (``KeyboardInterrupt`` and the CLI's SIGTERM handler
included) the temporary is removed, and what the target held before is untouched. A SIGKILL can leave
a hidden temporary behind; the next write to the same target removes those whose process is gone.

Folders follow the same rule and carry a marker file (``.genzoo-output``) listing what genzoo wrote, so
a folder genzoo did not create, or that holds files genzoo did not write, is never replaced. Commands
whose outputs go into a shared folder (``compare``, ``edit``) use ``merge``: their new files are moved in
one by one after all were written, and no other file is touched.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from genzoo.errors import UserError

MARKER = ".genzoo-output"
_UMASK = os.umask(0)
os.umask(_UMASK)


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def _remove_stale(path: Path) -> None:
    """Remove temporaries of ``path`` left by killed processes (their pid is no longer running)."""
    for entry in path.parent.glob(glob.escape(f".{path.name}.") + "*.tmp*"):
        pid = entry.name[len(path.name) + 2:].split(".", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def check_output_file(path: str | Path, flag: str = "--out") -> Path:
    """Refuse an output file path that names a folder (before any work starts)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {path}: is a folder; expected a file name")
    if path.parent.exists() and not path.parent.is_dir():
        raise UserError(f"{flag} {path}: {path.parent} is not a folder")
    return path


def check_output_folder(path: str | Path, flag: str = "--out") -> Path:
    """Refuse an output folder that is a file, or a non-empty folder holding files genzoo did not write."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path}: is a file; expected a folder")
    if path.is_dir():
        foreign = _foreign_entries(path)
        if foreign:
            raise UserError(f"{flag} {path}: a non-empty folder genzoo did not write ({foreign[0]!r} is not "
                            "genzoo's); choose a new or empty folder")
    return path


def _foreign_entries(folder: Path) -> list[str]:
    entries = sorted(p.name for p in folder.iterdir() if p.name != MARKER)
    if not entries:
        return []
    try:
        owned = set(json.loads((folder / MARKER).read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return entries
    return [name for name in entries if name not in owned]


class _Temporary:
    """A temporary (``tmp``) that a ``with`` block commits on success and discards on any exception."""

    tmp: Path

    def commit(self) -> Path:
        raise NotImplementedError

    def discard(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                self.discard()
                raise
        else:
            self.discard()


class AtomicFile(_Temporary):
    """A hidden temporary file beside ``path`` (same suffix, so writers that look at it still work);
    :meth:`commit` renames it into place, :meth:`discard` removes it. A context manager doing one or the
    other."""

    def __init__(self, path: str | Path, flag: str = "--out"):
        self.path = check_output_file(path, flag)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(self.path)
        fd, name = tempfile.mkstemp(prefix=_tmp_prefix(self.path), suffix=f".tmp{self.path.suffix}",
                                    dir=self.path.parent)
        os.close(fd)
        os.chmod(name, 0o666 & ~_UMASK)  # mkstemp's 0600 would otherwise become the output's mode
        self.tmp = Path(name)

    def commit(self) -> Path:
        _fsync(self.tmp)
        os.replace(self.tmp, self.path)
        return self.path

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)


class AtomicFolder(_Temporary):
    """A hidden temporary folder beside ``path``; on :meth:`commit` it replaces ``path`` (which must be
    absent, empty, or a folder genzoo wrote: see :func:`check_output_folder`) in one rename.

    ``owned=True`` skips that check, for folders whose whole parent genzoo owns (a run's checkpoints).
    ``merge=True`` instead moves each new file into ``path`` (one rename each, after all were written),
    replacing only files of the same name and leaving every other file there alone.
    """

    def __init__(self, path: str | Path, flag: str = "--out", owned: bool = False, merge: bool = False):
        self.path, self.flag, self.owned, self.merge = Path(path), flag, owned, merge
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"{flag} {self.path}: is a file; expected a folder")
        if not owned and not merge:
            check_output_folder(self.path, flag)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(self.path)
        self.tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(self.path), suffix=".tmp", dir=self.path.parent))
        os.chmod(self.tmp, 0o777 & ~_UMASK)

    def commit(self) -> Path:
        if self.merge:
            return self._commit_merge()
        files = sorted(p.name for p in self.tmp.iterdir() if p.name != MARKER)
        (self.tmp / MARKER).write_text(json.dumps({"files": files}) + "\n")
        for file in self.tmp.iterdir():
            if file.is_file():
                _fsync(file)
        if not self.owned:
            check_output_folder(self.path, self.flag)  # it may have changed while we worked
        if self.path.exists():
            # Rename the old folder onto an empty hidden one (atomic), then the new one into place.
            old = Path(tempfile.mkdtemp(prefix=_tmp_prefix(self.path), suffix=".tmp", dir=self.path.parent))
            os.replace(self.path, old)
            try:
                os.replace(self.tmp, self.path)
            except BaseException:
                os.replace(old, self.path)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp, self.path)
        return self.path

    def _commit_merge(self) -> Path:
        files = sorted(p for p in self.tmp.rglob("*") if p.is_file())
        clash = next((self.path / f.relative_to(self.tmp) for f in files
                      if (self.path / f.relative_to(self.tmp)).is_dir()), None)
        if clash is not None:
            raise UserError(f"{self.flag} {self.path}: {clash} is a folder; cannot write a file there")
        for file in files:
            _fsync(file)
        for file in files:
            target = self.path / file.relative_to(self.tmp)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(file, target)
        shutil.rmtree(self.tmp, ignore_errors=True)
        return self.path

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def atomic_output(path: str | Path, flag: str = "--out") -> AtomicFile:
    """``with atomic_output(out) as tmp: write(tmp)``: ``out`` appears complete on success, else is
    left as it was."""
    return AtomicFile(path, flag)


def atomic_folder(path: str | Path, flag: str = "--out", owned: bool = False,
                  merge: bool = False) -> AtomicFolder:
    """``with atomic_folder(out) as tmp: write files into tmp``: the folder appears complete on success
    (``merge``: its new files appear, the folder's other files stay)."""
    return AtomicFolder(path, flag, owned, merge)


@contextlib.contextmanager
def atomic_text(path: str | Path, flag: str = "--out") -> Iterator[object]:
    """An open text handle on a temporary that becomes ``path`` on success."""
    with atomic_output(path, flag) as tmp, open(tmp, "w") as handle:
        yield handle


class CommitOnExit:
    """The context protocol of a streaming writer: ``close()`` (commit) when the block ends normally,
    ``discard()`` when it raises, so an interrupted writer leaves the previous output in place."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()
