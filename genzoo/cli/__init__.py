"""The ``genzoo`` command: a thin layer over the Python API.

Each module in this package adds one sub-command with ``register(subparsers)`` and sets
``func`` to a function of the parsed arguments. User errors (:class:`~genzoo.errors.UserError`)
print one line and exit with code 2; nothing else is caught.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from genzoo.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genzoo",
        description="Train, sample, edit and measure GANs, diffusion and consistency models side by side.")
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from genzoo.progress import set_quiet

    set_quiet(getattr(args, "quiet", False))
    try:
        result = args.func(args)
    except UserError as err:
        print(f"genzoo {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"genzoo {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)
