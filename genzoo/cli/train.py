"""``genzoo train``: one training engine for every family (see docs/training.md).

``torchrun --nproc_per_node=P -m genzoo train ...`` trains data-parallel over P processes.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from genzoo.cli import OneLineParser

ORDER = 20


class _TrainParser(OneLineParser):
    """Remembers its argument strings, so ``run`` can tell flags given from defaults."""

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: Any = None):
        namespace, extras = super().parse_known_args(args, namespace)
        namespace._train_argv = list(args) if args is not None else []
        return namespace, extras


def register(subparsers: argparse._SubParsersAction) -> None:
    from genzoo.train.config import add_train_arguments

    parser = subparsers.add_parser(
        "train", help="train a diffusion, consistency or GAN model",
        description="Train a model. Settings come from flag defaults < --config FILE < flags given. "
                    "Run under torchrun for several processes or machines.")
    parser.__class__ = _TrainParser
    add_train_arguments(parser)
    parser.set_defaults(func=run, _train_parser=parser)


def explicit_keys(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The destinations of the flags present in ``argv`` (parsed with every default suppressed)."""
    saved = [(action, action.default) for action in parser._actions]
    try:
        for action, _ in saved:
            action.default = argparse.SUPPRESS
        namespace, _ = argparse.ArgumentParser.parse_known_args(parser, list(argv), None)
    finally:
        for action, default in saved:
            action.default = default
    return set(vars(namespace))


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The flags given explicitly, as a flat dict; ``genzoo.train`` fills in the rest (defaults <
    the run's config.json when resuming < ``--config`` file < these)."""
    values = {k: v for k, v in vars(args).items() if not k.startswith("_") and k not in ("func", "command")}
    explicit = explicit_keys(args._train_parser, args._train_argv)
    import shlex

    return {**{k: values[k] for k in explicit if k in values},
            "command_line": shlex.join(["genzoo", "train", *args._train_argv])}


def run(args: argparse.Namespace) -> int:
    from genzoo.train.engine import train

    train(config_from_args(args))
    return 0
