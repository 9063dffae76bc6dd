"""A restricted reader of NVlabs network-snapshot pickles (NVlabs/edm, edm2) that runs none of their code.

The official snapshots (``network-snapshot-*.pkl``, ``edm-*.pkl``, ``edm2-*.pkl``) are plain ``pickle.dump``
output of a dict such as ``{"ema": net, "loss_fn": ..., "augment_pipe": ..., "dataset_kwargs": ...}``.
Every network class is wrapped by ``torch_utils.persistence.persistent_class``, whose ``__reduce__`` turns
an instance into the call ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with
``meta = {"type": "class", "version": 6, "module_src": <source of its Python module>, "class_name": ...,
"state": <the instance's __dict__>}``. The official loader ``exec``s ``module_src``; this reader never does.
It records each such object as a :class:`PersistentRecord` (class name, a SHA-256 of the source, the
constructor arguments, parameters, buffers and sub-modules) and leaves it to ``genzoo.checkpoints.edm`` /
``edm2`` to rebuild genzoo's own modules from those records.

Only these globals may be named by the pickle (anything else is refused with a :class:`UserError`
naming it, before anything is called):

- ``torch_utils.persistence._reconstruct_persistent_obj`` -> a :class:`PersistentRecord` (no ``exec``);
- tensors as ``pickle.dump`` writes them: ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_tensor`` /
  ``_rebuild_parameter`` / ``_rebuild_parameter_with_state`` re-implemented here over a storage from
  ``torch.storage._load_from_bytes``, which is read by ``torch.load(weights_only=True)``;
  ``torch`` dtypes (``torch.float16``, ...);
- ``collections.OrderedDict``; ``dnnlib.util.EasyDict`` (read as a plain dict);
  ``copyreg._reconstructor`` only for the allowed classes; ``builtins.set`` / ``frozenset`` and
  ``_codecs.encode(str, 'latin1')``, with which pickle protocols 0-2 write sets and bytes;
- ``torch.nn`` containers (``ModuleList``, ``ModuleDict``, ``Sequential``, ``ParameterList``,
  ``ParameterDict``) -> :class:`ModuleRecord`;
- numpy scalars and arrays of numeric dtypes (``numpy.dtype``, ``numpy.core.multiarray.scalar`` /
  ``_reconstruct``, ``numpy.ndarray``; ``numpy._core`` too): snapshots may hold them in plain data.
"""

from __future__ import annotations

import _compat_pickle
import hashlib
import io
import pickle
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genzoo.errors import UserError

__all__ = [
    "ModuleRecord",
    "PersistentRecord",
    "Record",
    "iter_records",
    "read_nvlabs_pickle",
    "record_state_dict",
]

#: ``nn.Module.__dict__`` entries that are torch's machinery, not the module's own attributes.
MODULE_INTERNALS = frozenset({
    "training", "_parameters", "_buffers", "_modules", "_non_persistent_buffers_set",
    "_backward_pre_hooks", "_backward_hooks", "_is_full_backward_hook", "_forward_hooks",
    "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs", "_state_dict_hooks", "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks", "_compiled_call_impl",
    "_init_args", "_init_kwargs", "_record_init_args",
})
_HOOK_KEYS = frozenset(k for k in MODULE_INTERNALS if "hooks" in k)

TORCH_CONTAINERS = ("ModuleList", "ModuleDict", "Sequential", "ParameterList", "ParameterDict")


@dataclass(eq=False)
class ModuleRecord:
    """A plain ``torch.nn`` container found in the pickle (e.g. ``torch.nn.ModuleDict``).

    ``type_name`` is its qualified name (``torch.nn.modules.container.ModuleDict``); the other fields are
    as in :class:`PersistentRecord`.
    """

    type_name: str
    parameters: dict[str, torch.Tensor] = field(default_factory=dict)
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)
    non_persistent_buffers: frozenset[str] = frozenset()
    modules: dict[str, Record] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)
    training: bool = False


@dataclass(eq=False)
class PersistentRecord:
    """One object saved by ``torch_utils.persistence``: what its class was, how it was built, what it held.

    ``class_name``: the class's name in its original module (``SongUNet``, ``EDMPrecond``, ...).
    ``module_src_sha256``: SHA-256 (hex) of the stored module source; the source itself is not kept, and
    never run. ``version``: the persistence format's version (6 in EDM and EDM2).
    ``init_args`` / ``init_kwargs``: the constructor's arguments as recorded by the decorator (empty when
    the object did not record them). ``parameters`` / ``buffers``: its own tensors (not sub-modules');
    ``modules``: its direct sub-modules by attribute name. ``attributes``: every other entry of its
    ``__dict__`` (floats, strings, ...; torch's hook dictionaries and bookkeeping are left out).
    ``is_module``: whether it was an ``nn.Module`` (a loss object is not).
    """

    class_name: str
    module_src_sha256: str
    version: int | None = None
    init_args: tuple[Any, ...] = ()
    init_kwargs: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, torch.Tensor] = field(default_factory=dict)
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)
    non_persistent_buffers: frozenset[str] = frozenset()
    modules: dict[str, Record] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)
    is_module: bool = True
    training: bool = False


Record = PersistentRecord | ModuleRecord


# ----------------------------------------------------------------------------- record trees


def record_state_dict(record: Record, prefix: str = "") -> dict[str, torch.Tensor]:
    """The state dict ``nn.Module.state_dict()`` would give for the module the record describes.

    Dotted names (``model.enc.32x32_block0.conv0.weight``), parameters then persistent buffers per
    module, sub-modules after, in the pickle's order (which is the modules' registration order).
    """
    out: dict[str, torch.Tensor] = {}
    for name, tensor in record.parameters.items():
        out[prefix + name] = tensor
    for name, tensor in record.buffers.items():
        if name not in record.non_persistent_buffers:
            out[prefix + name] = tensor
    for name, child in record.modules.items():
        out.update(record_state_dict(child, f"{prefix}{name}."))
    return out


def iter_records(record: Record, prefix: str = ""):
    """Yield ``(dotted_name, record)`` for the record and all its sub-modules, parents first."""
    yield prefix.rstrip("."), record
    for name, child in record.modules.items():
        yield from iter_records(child, f"{prefix}{name}.")


# ----------------------------------------------------------------------------- the allow-list


def _refuse(what: str) -> UserError:
    return UserError(what)


def _check_storage(storage: Any) -> torch.storage.TypedStorage:
    if isinstance(storage, torch.storage.TypedStorage):
        return storage
    raise _refuse(f"a tensor is built over {type(storage).__name__}, not a torch storage")


def _rebuild_tensor(storage: Any, storage_offset: int, size: tuple, stride: tuple, *_: Any) -> torch.Tensor:
    """A tensor viewing ``storage`` (torch._utils._rebuild_tensor's arguments); ``set_`` checks bounds."""
    storage = _check_storage(storage)
    if not (isinstance(storage_offset, int) and isinstance(size, tuple) and isinstance(stride, tuple)
            and len(size) == len(stride) and all(isinstance(v, int) and v >= 0 for v in (*size, *stride))):
        raise _refuse("a tensor's offset, size or stride is not a non-negative int / tuple of them")
    # set_ would grow the storage to fit (exposing uninitialised memory): the view must lie inside it
    last = sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    extent = 0 if 0 in size else storage_offset + 1 + last
    available = storage._size()  # the element count (the public size() warns of TypedStorage's deprecation)
    if storage_offset < 0 or extent > available:
        raise _refuse(f"a tensor of size {list(size)} reaches element {extent} of a storage of {available}")
    tensor = torch.empty((0,), dtype=storage.dtype)
    return tensor.set_(storage._untyped_storage, storage_offset, torch.Size(size), stride)


def _rebuild_tensor_v2(storage: Any, storage_offset: int, size: tuple, stride: tuple, requires_grad: bool,
                       backward_hooks: Any, metadata: Any = None) -> torch.Tensor:
    if backward_hooks:
        raise _refuse("a tensor carries backward hooks")
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: bool, backward_hooks: Any,
                       state: Any = None) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise _refuse(f"a parameter holds {type(data).__name__}, not a tensor")
    if backward_hooks or state:
        raise _refuse("a parameter carries hooks or extra state")
    return data


def _load_storage_bytes(data: Any) -> torch.storage.TypedStorage:
    """A storage saved by ``torch.save`` into bytes (``TypedStorage.__reduce__``), read weights-only."""
    if not isinstance(data, (bytes, bytearray)):
        raise _refuse("torch.storage._load_from_bytes was given something other than bytes")
    try:
        storage = torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for bad bytes
        raise _refuse(f"a tensor storage cannot be read weights-only ({type(err).__name__})") from None
    if not isinstance(storage, torch.storage.TypedStorage):
        raise _refuse(f"a storage record holds {type(storage).__name__}, not a storage")
    return storage


class _EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict``: a plain dict (turned into ``dict`` after loading)."""


class _ContainerStub:
    """Built by NEWOBJ for an allowed ``torch.nn`` container; turned into a :class:`ModuleRecord` after."""

    type_name = ""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise _refuse(f"{self.type_name}: its state is {type(state).__name__}, not a dict")
        self.state = state


_CONTAINER_STUBS = {
    name: type(f"_{name}Stub", (_ContainerStub,), {"type_name": f"torch.nn.modules.container.{name}"})
    for name in TORCH_CONTAINERS
}


def _copyreg_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    if base is object and state is None and isinstance(cls, type) and issubclass(cls, _ContainerStub):
        return object.__new__(cls)
    raise _refuse(f"copyreg._reconstructor called for {getattr(cls, '__name__', cls)!r}")


@dataclass
class _PendingPersistent:
    meta: dict[str, Any]


def _reconstruct_persistent_obj(meta: Any) -> _PendingPersistent:
    """Stand-in for ``torch_utils.persistence._reconstruct_persistent_obj``: keeps ``meta``, runs nothing."""
    if not isinstance(meta, dict):
        raise _refuse(f"a persistent object's metadata is {type(meta).__name__}, not a dict")
    if meta.get("type") != "class":
        raise _refuse(f"a persistent object of type {meta.get('type')!r} (only 'class' is known)")
    for key, kind in (("class_name", str), ("module_src", str), ("state", dict)):
        if not isinstance(meta.get(key), kind):
            raise _refuse(f"a persistent object's {key!r} is not a {kind.__name__}")
    return _PendingPersistent(meta)


def _numpy_reconstruct(cls: Any, shape: Any, dtype_code: Any) -> np.ndarray:
    if cls is not np.ndarray:
        raise _refuse(f"numpy _reconstruct called for {getattr(cls, '__name__', cls)!r}")
    return np.ndarray.__new__(np.ndarray, shape, dtype_code)


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise _refuse("a numpy scalar of an object or unknown dtype")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _numpy_dtype(*args: Any) -> np.dtype:
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise _refuse("a numpy object array")
    return dtype


def _latin1_bytes(text: Any, encoding: Any = "latin1") -> bytes:
    """``_codecs.encode(text, 'latin1')``: how pickle protocols 0-2 write a ``bytes`` object."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _refuse("_codecs.encode called with something other than (str, 'latin1')")
    return text.encode("latin1")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_bytes,
    ("collections", "OrderedDict"): OrderedDict,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("dnnlib", "EasyDict"): _EasyDict,
    ("copyreg", "_reconstructor"): _copyreg_reconstructor,
    ("builtins", "set"): set,  # protocols < 4 write sets and frozensets as these calls
    ("builtins", "frozenset"): frozenset,
    ("_codecs", "encode"): _latin1_bytes,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _numpy_dtype,
    **{(f"numpy.{core}.multiarray", "_reconstruct"): _numpy_reconstruct for core in ("core", "_core")},
    **{(f"numpy.{core}.multiarray", "scalar"): _numpy_scalar for core in ("core", "_core")},
    **{("torch.nn.modules.container", name): stub for name, stub in _CONTAINER_STUBS.items()},
    **{("torch.nn", name): stub for name, stub in _CONTAINER_STUBS.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        # protocols < 3 name Python 2 modules (__builtin__, copy_reg); map them as pickle itself does
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise _refuse(f"it names {module}.{name}, which is not on the allow-list")

    def persistent_load(self, pid: Any) -> Any:
        raise _refuse(f"it holds a persistent id {str(pid)[:40]!r} (network snapshots have none)")


# ----------------------------------------------------------------------------- turning stubs into records


def _tensors(entries: Any, what: str) -> dict[str, torch.Tensor]:
    if entries is None:
        return {}
    if not isinstance(entries, dict):
        raise _refuse(f"{what} is {type(entries).__name__}, not a dict")
    out = {}
    for name, value in entries.items():
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            raise _refuse(f"{what}[{name!r}] is {type(value).__name__}, not a tensor")
        out[str(name)] = value
    return out


class _Converter:
    """Replaces stubs by records, EasyDicts by dicts, throughout the loaded object (shared objects once)."""

    def __init__(self) -> None:
        self.memo: dict[int, Any] = {}

    def __call__(self, obj: Any) -> Any:
        key = id(obj)
        if key in self.memo:
            return self.memo[key]
        if isinstance(obj, _PendingPersistent):
            out = self._persistent(obj.meta)
        elif isinstance(obj, _ContainerStub):
            state = getattr(obj, "state", {})
            out = ModuleRecord(type_name=obj.type_name, **self._module_fields(state, obj.type_name))
        elif isinstance(obj, OrderedDict):
            out = OrderedDict((k, self(v)) for k, v in obj.items())
        elif isinstance(obj, dict):
            out = {k: self(v) for k, v in obj.items()}
        elif isinstance(obj, list):
            out = [self(v) for v in obj]
        elif isinstance(obj, tuple):
            out = tuple(self(v) for v in obj)
        else:
            out = obj
        self.memo[key] = out
        return out

    def _module_fields(self, state: dict[str, Any], what: str) -> dict[str, Any]:
        for key in _HOOK_KEYS:
            if state.get(key):
                raise _refuse(f"{what} carries {key}")
        modules = {}
        for name, child in (state.get("_modules") or {}).items():
            if child is None:
                continue
            child = self(child)
            if not isinstance(child, (PersistentRecord, ModuleRecord)):
                raise _refuse(f"{what}._modules[{name!r}] is {type(child).__name__}, not a module record")
            modules[str(name)] = child
        non_persistent = state.get("_non_persistent_buffers_set") or set()
        return dict(
            parameters=_tensors(state.get("_parameters"), f"{what}._parameters"),
            buffers=_tensors(state.get("_buffers"), f"{what}._buffers"),
            non_persistent_buffers=frozenset(str(n) for n in non_persistent),
            modules=modules,
            attributes={k: self(v) for k, v in state.items() if k not in MODULE_INTERNALS},
            training=bool(state.get("training", False)),
        )

    def _persistent(self, meta: dict[str, Any]) -> PersistentRecord:
        state = meta["state"]
        name = meta["class_name"]
        sha = hashlib.sha256(meta["module_src"].encode("utf-8", "surrogatepass")).hexdigest()
        init_args = state.get("_init_args") or ()
        init_kwargs = state.get("_init_kwargs") or {}
        if not isinstance(init_args, (tuple, list)) or not isinstance(init_kwargs, dict):
            raise _refuse(f"{name}: its recorded constructor arguments are not a tuple and a dict")
        is_module = "_parameters" in state or "_modules" in state
        fields = self._module_fields(state, name) if is_module else dict(
            attributes={k: self(v) for k, v in state.items() if k not in MODULE_INTERNALS})
        return PersistentRecord(
            class_name=name,
            module_src_sha256=sha,
            version=meta.get("version") if isinstance(meta.get("version"), int) else None,
            init_args=tuple(self(a) for a in init_args),
            init_kwargs={str(k): self(v) for k, v in init_kwargs.items()},
            is_module=is_module,
            **fields,
        )


# ----------------------------------------------------------------------------- the entry point


def read_nvlabs_pickle(path: str | Path) -> dict[str, Any]:
    """Read an NVlabs network-snapshot pickle without running any of its code.

    Returns the pickled dict (``{"ema": PersistentRecord, "loss_fn": ..., "dataset_kwargs": {...}}``)
    with every persistent object as a :class:`PersistentRecord` and every ``torch.nn`` container as a
    :class:`ModuleRecord`; tensors are CPU tensors. Raises :class:`UserError` (one line, naming the file
    and what was found) for anything outside the allow-list, or a file that is not such a pickle.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        with open(path, "rb") as handle:
            loaded = _RestrictedUnpickler(handle).load()
    except UserError as err:
        raise UserError(f"{path}: refusing to load this pickle: {err}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, RuntimeError, MemoryError) as err:
        raise UserError(f"{path}: not a readable network-snapshot pickle ({type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else ''})") from None
    try:
        data = _Converter()(loaded)
    except UserError as err:
        raise UserError(f"{path}: refusing to load this pickle: {err}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a network snapshot (a pickled dict such as {{'ema': ...}}), "
                        f"found {type(data).__name__}")
    return data

