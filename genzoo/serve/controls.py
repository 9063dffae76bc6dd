"""Web controls derived from the families' typed sample options (:mod:`genzoo.options`).

Each family declares its sampling options once, as the fields of its ``SampleOptions`` dataclass. This
module adds them to a fresh parser, as ``genzoo sample`` does, and reads the actions back as
:class:`ControlSpec`: flag, destination, kind, default, choices and help. The web app builds one
widget per spec and turns widget values back into the same command-line flags, so the app offers
exactly the options the CLI does and a control a family does not take never appears for its models.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from genzoo.errors import UserError
from genzoo.family import get_family
from genzoo.options import Options, add_arguments

#: the model families the app samples
FLAG_SOURCES: dict[str, tuple[str, ...]] = {
    "diffusion": ("diffusion",),
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


def control_keys() -> list[str]:
    """Every control set: the sampleable families, GigaGAN's apart."""
    return [*FLAG_SOURCES, *(["gan-text"] if _gigagan_options() is not None else [])]


def _kind(action: argparse.Action) -> str:
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return "flag"
    if isinstance(action, argparse._AppendAction):
        return "lines"
    if action.choices is not None:
        return "choice"
    kind = getattr(action.type, "kind", action.type)  # genzoo.validate.Number carries its kind
    if kind is int:
        return "int"
    if kind is float:
        return "float"
    return "text"


def _read(declare: Callable[[argparse.ArgumentParser], None]) -> list[ControlSpec]:
    """The flags a declaring function (``add_sample_arguments``) adds to an empty parser, as specs."""
    parser = argparse.ArgumentParser(add_help=False)
    declare(parser)
    specs = []
    for action in parser._actions:
        flag = next((s for s in action.option_strings if s.startswith("--")), None)
        if flag is None:
            continue
        choices = tuple(str(c) for c in action.choices) if action.choices is not None else None
        specs.append(ControlSpec(flag, action.dest, _kind(action), action.default, choices,
                                 (action.help or "").replace("%%", "%")))
    return specs


def _gigagan_options() -> type[Options] | None:
    types = get_family("gan").sample_option_types()
    return types[1] if len(types) > 1 else None


def control_key(config: dict[str, Any]) -> str:
    """Which control set a model gets: its family, or ``gan-text`` for a GigaGAN (the gan family samples
    GigaGANs with GigaGAN's own options)."""
    family = str(config.get("family"))
    if family == "gan" and str(config.get("arch") or "").startswith("gigagan"):
        return "gan-text"
    return family


def sample_controls(key: str) -> list[ControlSpec]:
    """The sample options of a model family (or :func:`control_key`), in declaration order, from the
    family's options type: BigGAN's for ``gan``, GigaGAN's for ``gan-text``."""
    family = "gan" if key == "gan-text" else key
    if family not in FLAG_SOURCES:
        raise UserError(f"family {key!r}: no sampling controls (sampleable: {', '.join(FLAG_SOURCES)})")
    kind = get_family(family).sample_option_types()[0]
    if key == "gan-text":
        kind = _gigagan_options()
    return _read(lambda parser: add_arguments(parser, kind, unset_defaults=True))  # empty = the default


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
