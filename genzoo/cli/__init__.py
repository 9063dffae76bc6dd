"""The ``genzoo`` command: a thin layer over the Python API.

Each module in this package adds one sub-command with ``register(subparsers)`` and sets
``func`` to a function of the parsed arguments. :func:`main` is the one place errors meet the user:
a bad flag or value (argparse, :class:`~genzoo.errors.UserError`) prints one line and exits with
code 2; Ctrl-C exits with 130 and SIGTERM with 143, one line each, after every temporary output is
removed; any other exception is a bug in genzoo and shows its traceback. ``GENZOO_DEBUG=1`` shows the
traceback of user errors too.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import signal
import sys
import threading
import traceback
from collections.abc import Sequence

from genzoo.errors import Terminated, UserError


class CommandLineError(SystemExit):
    """A parse error: a SystemExit(2) (as argparse raises) that :func:`main` prints as one line."""

    def __init__(self, prog: str, message: str):
        super().__init__(2)
        self.prog, self.message = prog, message


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage block); sub-parsers inherit the class."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        raise CommandLineError(self.prog, message)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="genzoo",
        description="Train, sample, edit and measure GANs, diffusion and consistency models side by side.")
    parser.add_argument("--version", action="version", version=version_text(),
                        help="print genzoo's and torch's versions and exit")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = [importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__)
               if not m.name.startswith("_")]
    for module in sorted(modules, key=lambda m: getattr(m, "ORDER", 50)):
        module.register(subparsers)
    _add_quiet(subparsers)
    return parser


QUIET_COMMANDS = ("sample", "eval", "convert", "edit", "compare", "upsample", "reproduce")


def _add_quiet(subparsers: argparse._SubParsersAction, names: Sequence[str] = QUIET_COMMANDS) -> None:
    """``--quiet`` on the commands that draw progress bars (bars are also off when stderr is not a
    terminal)."""
    for name, command in subparsers.choices.items():
        if names and name not in names:
            continue
        nested = [a for a in command._actions if isinstance(a, argparse._SubParsersAction)]
        for action in nested:
            _add_quiet(action, ())
        if not nested and not any("--quiet" in a.option_strings for a in command._actions):
            command.add_argument("--quiet", action="store_true",
                                 help="no progress bars (also off when stderr is not a terminal)")


def version_text() -> str:
    """``genzoo 0.1.0 (torch 2.13.0, Python 3.11.4)``, without importing torch."""
    import platform
    from importlib import metadata

    from genzoo.version import __version__

    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "not installed"
    return f"genzoo {__version__} (torch {torch_version}, Python {platform.python_version()})"


def _raise_terminated(signum, frame):
    raise Terminated()


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: Sequence[str] | None = None) -> int:
    debug = os.environ.get("GENZOO_DEBUG", "") not in ("", "0")
    command = "genzoo"
    restore = None
    if threading.current_thread() is threading.main_thread():
        restore = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        command = f"genzoo {args.command}"
        from genzoo.progress import set_quiet

        set_quiet(getattr(args, "quiet", False))
        return int(args.func(args) or 0)
    except CommandLineError as err:
        print(f"{err.prog}: error: {_one_line(err.message)}", file=sys.stderr)
        return 2
    except UserError as err:
        if debug:
            traceback.print_exc()
        print(f"{command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"{command}: interrupted; outputs left as they were", file=sys.stderr)
        return 130
    except Terminated:
        print(f"{command}: terminated (SIGTERM); outputs left as they were", file=sys.stderr)
        return 143
    finally:
        if restore is not None:
            signal.signal(signal.SIGTERM, restore)
