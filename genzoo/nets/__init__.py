"""The network registry: every network genzoo can build, found by name.

A module in this package registers its builders with :func:`register`; :func:`build` constructs one
from plain JSON-able config, which is saved next to the weights so a checkpoint rebuilds itself.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

import torch.nn as nn

from genzoo.errors import UserError

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_DISCOVERED = False


def register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a network class or builder function under ``name``."""

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BUILDERS and _BUILDERS[name] is not builder:
            raise ValueError(f"network name {name!r} is registered twice")
        _BUILDERS[name] = builder
        return builder

    return decorate


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")
    _DISCOVERED = True


def names() -> list[str]:
    """All registered network names, sorted."""
    _discover()
    return sorted(_BUILDERS)


def build(name: str, **config) -> nn.Module:
    """Build the network registered as ``name`` from its config (keyword arguments)."""
    _discover()
    if name not in _BUILDERS:
        raise UserError(f"--arch: unknown network {name!r}; registered: {', '.join(names())}")
    return _BUILDERS[name](**config)
