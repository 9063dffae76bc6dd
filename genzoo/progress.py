"""Progress bars for the commands (images done, images/s, ETA), shown only where someone watches.

A bar is drawn on rank 0 when stderr is a terminal and the command was not given ``--quiet``; logs
and pipes get none, as tqdm's ``disable=None`` convention.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm

_quiet = False


def set_quiet(quiet: bool) -> None:
    """``--quiet``: no progress bars in this process (the CLI sets it for each command)."""
    global _quiet
    _quiet = bool(quiet)


def bars_enabled(main_process: bool = True) -> bool:
    return main_process and not _quiet and sys.stderr.isatty()


def progress(total: int | Iterable | None, desc: str, unit: str = "img", main_process: bool = True,
             **kwargs: Any) -> tqdm:
    """A tqdm bar writing to stderr, disabled unless :func:`bars_enabled`; ``total`` may be an iterable
    to wrap."""
    iterable = None if total is None or isinstance(total, int) else total
    return tqdm(iterable, total=None if iterable is not None else total, desc=desc, unit=unit,
                dynamic_ncols=True, file=sys.stderr, disable=not bars_enabled(main_process), **kwargs)
