"""Writing pickles in the layout of NVlabs' ``torch_utils.persistence`` (EDM, EDM2), without their code.

A persistent object pickles as the call ``torch_utils.persistence._reconstruct_persistent_obj(meta)``
with ``meta = {type: 'class', version: 6, module_src, class_name, state}``, ``state`` being the object's
``__dict__`` (for an ``nn.Module``: ``training``, ``_parameters``, ``_buffers``, hook dicts, ``_modules``,
plus the decorator's ``_init_args`` / ``_init_kwargs`` and the class's own attributes).
:class:`FakePersistent` reproduces that reduce tuple; :func:`official_globals` puts stand-in modules named
``torch_utils.persistence`` and ``dnnlib.util`` into ``sys.modules`` while pickling only, so that ``pickle``
can name the globals.
"""

from __future__ import annotations

import contextlib
import pickle
import sys
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

MODULE_SRC = "# stand-in for the network module's source; genzoo never runs it\n"


def _reconstruct_persistent_obj(meta):  # never called: only its name is pickled
    raise AssertionError("the stand-in reconstruct function must not be called")


class EasyDict(dict):
    """Stand-in for dnnlib.util.EasyDict (pickles by that name inside :func:`official_globals`)."""


@contextlib.contextmanager
def official_globals():
    """Temporarily register ``torch_utils.persistence`` and ``dnnlib.util`` stand-ins for pickling."""
    persistence = types.ModuleType("torch_utils.persistence")
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    dnnlib_util = types.ModuleType("dnnlib.util")
    dnnlib_util.EasyDict = EasyDict
    saved = {}
    replacements = {
        "torch_utils": types.ModuleType("torch_utils"),
        "torch_utils.persistence": persistence,
        "dnnlib": types.ModuleType("dnnlib"),
        "dnnlib.util": dnnlib_util,
    }
    old_names = (_reconstruct_persistent_obj.__module__, EasyDict.__module__, EasyDict.__qualname__)
    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    try:
        for name, module in replacements.items():
            saved[name] = sys.modules.get(name)
            sys.modules[name] = module
        yield
    finally:
        _reconstruct_persistent_obj.__module__ = old_names[0]
        EasyDict.__module__, EasyDict.__qualname__ = old_names[1], old_names[2]
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def module_state(params: dict[str, torch.Tensor] | None = None,
                 buffers: dict[str, torch.Tensor] | None = None,
                 modules: dict[str, Any] | None = None, **attrs: Any) -> dict[str, Any]:
    """An ``nn.Module.__dict__`` as torch builds it (parameters as ``nn.Parameter``)."""
    state: dict[str, Any] = {"training": False}
    state["_parameters"] = OrderedDict(
        (k, None if v is None else torch.nn.Parameter(v, requires_grad=False))
        for k, v in (params or {}).items())
    state["_buffers"] = OrderedDict(buffers or {})
    state["_non_persistent_buffers_set"] = set()
    for hooks in ("_backward_pre_hooks", "_backward_hooks", "_forward_hooks", "_forward_hooks_with_kwargs",
                  "_forward_hooks_always_called", "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs",
                  "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
                  "_load_state_dict_post_hooks"):
        state[hooks] = OrderedDict()
    state["_is_full_backward_hook"] = None
    state["_modules"] = OrderedDict(modules or {})
    state.update(attrs)
    return state


class FakePersistent:
    """Pickles exactly like an instance of a ``persistence.persistent_class``-decorated class."""

    def __init__(self, class_name: str, state: dict[str, Any], init_args: tuple = (),
                 init_kwargs: dict[str, Any] | None = None, module_src: str = MODULE_SRC, version: int = 6):
        self.class_name, self.module_src, self.version = class_name, module_src, version
        self.state = dict(state, _init_args=tuple(init_args), _init_kwargs=dict(init_kwargs or {}))

    def __reduce__(self):
        meta = dict(type="class", version=self.version, module_src=self.module_src,
                    class_name=self.class_name, state=self.state)
        return (_reconstruct_persistent_obj, (meta,))


def persistent_module(class_name: str, init_kwargs: dict[str, Any] | None = None, params=None, buffers=None,
                      modules=None, **attrs: Any) -> FakePersistent:
    state = module_state(params, buffers, modules, **attrs)
    return FakePersistent(class_name, state, init_kwargs=init_kwargs)


def module_dict(children: dict[str, Any]) -> torch.nn.ModuleDict:
    """A real ``torch.nn.ModuleDict`` holding persistent stand-ins (as EDM's ``enc``/``dec``)."""
    container = torch.nn.ModuleDict()
    for name, child in children.items():
        container._modules[name] = child  # bypasses the Module type check: the children are stand-ins
    return container


def write_snapshot(path: Path, data: dict[str, Any], protocol: int | None = None) -> Path:
    """``pickle.dump(data, f)`` as the official training loops do (default protocol unless given)."""
    with official_globals(), open(path, "wb") as handle:
        pickle.dump(data, handle, protocol=protocol)
    return path
