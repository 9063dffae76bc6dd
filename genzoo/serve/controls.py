"""Web controls derived from the families' own ``genzoo sample`` flag declarations.

Each family declares its sampling flags once, in ``add_sample_arguments`` (argparse). This module runs
that declaration on a fresh parser per family and reads the actions back as :class:`ControlSpec`: flag,
destination, kind, default, choices and help. The web app builds one widget per spec and turns widget
values back into the same command-line flags, so the app offers exactly the options the CLI does and a
control a family does not take never appears for its models.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from genzoo.errors import UserError
from genzoo.family import get_family

#: model family -> the families whose sample flags apply to its models (the ADM classifier family
#: declares classifier guidance and the discrete samplers' flags, which the diffusion sampler reads)
FLAG_SOURCES: dict[str, tuple[str, ...]] = {
    "diffusion": ("diffusion", "classifier"),
    "consistency": ("consistency",),
    "gan": ("gan",),
}

#: flags shown first (the rest go under "more options"); each family shows those it declares
PRIMARY_FLAGS = ("--sampler", "--steps", "--guidance", "--ts", "--truncation", "--prompt")


@dataclass(frozen=True)
class ControlSpec:
    """One sample option as a widget: ``kind`` is int, float, text, choice, flag (on/off) or lines
    (a repeatable flag, one value per line)."""

    flag: str
    dest: str
    kind: str
    default: Any
    choices: tuple[str, ...] | None
    help: str

    @property
    def label(self) -> str:
        return self.flag.lstrip("-")

    @property
    def primary(self) -> bool:
        return self.flag in PRIMARY_FLAGS


def sampleable_families() -> list[str]:
    return list(FLAG_SOURCES)


def _kind(action: argparse.Action) -> str:
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return "flag"
    if isinstance(action, argparse._AppendAction):
        return "lines"
    if action.choices is not None:
        return "choice"
    if action.type is int:
        return "int"
    if action.type is float:
        return "float"
    return "text"


def sample_controls(family: str) -> list[ControlSpec]:
    """The sample options of a model family, in declaration order, read from its argparse flags."""
    if family not in FLAG_SOURCES:
        raise UserError(f"family {family!r}: no sampling controls (sampleable: {', '.join(FLAG_SOURCES)})")
    parser = argparse.ArgumentParser(add_help=False)
    for source in FLAG_SOURCES[family]:
        get_family(source).add_sample_arguments(parser)
    specs = []
    for action in parser._actions:
        flag = next((s for s in action.option_strings if s.startswith("--")), None)
        if flag is None:
            continue
        choices = tuple(str(c) for c in action.choices) if action.choices is not None else None
        specs.append(ControlSpec(flag, action.dest, _kind(action), action.default, choices,
                                 (action.help or "").replace("%%", "%")))
    return specs


def _number(spec: ControlSpec, value: Any) -> str:
    text = str(value).strip()
    try:
        number = int(text) if spec.kind == "int" else float(text)
    except ValueError:
        what = "an integer" if spec.kind == "int" else "a number"
        raise UserError(f"{spec.flag}: expected {what}, got {text!r}") from None
    if spec.kind == "int" and isinstance(value, float) and value != int(value):
        raise UserError(f"{spec.flag}: expected an integer, got {value!r}")
    return str(number)


def to_flags(specs: list[ControlSpec], values: dict[str, Any]) -> list[str]:
    """Command-line flags for widget values keyed by flag; empty values (None, "", unchecked) are left
    out, so the family's own default applies exactly as when the flag is not given to the CLI."""
    known = {spec.flag: spec for spec in specs}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise UserError(f"{', '.join(unknown)}: not a sample option of this model family")
    argv: list[str] = []
    for flag, value in values.items():
        spec = known[flag]
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if spec.kind == "flag":
            if value:
                argv.append(flag)
        elif spec.kind == "lines":
            for line in str(value).splitlines():
                if line.strip():
                    argv += [flag, line.strip()]
        elif spec.kind in ("int", "float"):
            argv += [flag, _number(spec, value)]
        else:
            text = str(value).strip()
            if spec.choices is not None and text not in spec.choices:
                raise UserError(f"{flag}: expected one of {', '.join(spec.choices)}, got {text!r}")
            argv += [flag, text]
    return argv
