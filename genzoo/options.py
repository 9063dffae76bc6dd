"""Typed options: a family declares its sampling and training options as dataclasses, one field per
option, with its default, its check (a :mod:`genzoo.validate` checker or choices) and its help text
beside it. Everything else derives from that declaration: the CLI flags (``--field-name``, defaults shown
in ``--help``), the Python API's keyword checking, the web app's controls and the values a run records.

    @dataclass(frozen=True)
    class SampleOptions(Options):
        steps: int | None = option(None, V.positive_int, "sampling steps (default 18)")
        sampler: str = option("heun", help="the sampler", choices=("heun", "euler"))

Adding an option is adding one field. An instance is also a read-only mapping from field names to
values (``options["steps"]``, ``options.get("steps")``), so code written against option dicts keeps
working while it moves to attributes.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from genzoo.errors import UserError
from genzoo.validate import check_value

T = TypeVar("T", bound="Options")

#: the kinds of option: a value, an on/off switch (a flag without value) or a repeatable value (a list)
KINDS = ("value", "switch", "repeat")


@dataclass(frozen=True)
class OptionSpec:
    """What a field of an options type says about its option."""

    name: str
    default: Any
    check: Any
    help: str
    choices: tuple[Any, ...] | None
    kind: str
    metavar: str | None
    loads: str | None = None  # the option names a model (a path the API loads): its family, or "denoiser"

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def help_text(self) -> str:
        """The help with its default, unless the text already says what the default is."""
        if self.default is None or self.kind == "switch" or "default" in self.help:
            return self.help
        default = ",".join(map(str, self.default)) if isinstance(self.default, (list,
                                                                                tuple)) else self.default
        return f"{self.help} (default {default})"

    def parse(self, value: Any, family: str) -> Any:
        """The checked value (strings from the command line are parsed); UserError naming the flag."""
        if value is None:
            return None
        if self.kind == "switch":
            if not isinstance(value, bool):
                raise UserError(f"{self.flag}: expected true or false, got {value!r}")
            return value
        if self.kind == "repeat":
            values = [value] if isinstance(value, (str, int, float)) else list(value)
            return [self._one(v, family) for v in values]
        return self._one(value, family)

    def _one(self, value: Any, family: str) -> Any:
        value = check_value(self.flag, value, self.check)
        if callable(self.check) and not hasattr(self.check, "parse") and isinstance(value, str):
            try:  # a plain converter (argparse ``type=``), e.g. seeds_text
                value = self.check(value)
            except (argparse.ArgumentTypeError, ValueError, TypeError) as err:
                raise UserError(f"{self.flag}: {err}") from None
        if self.choices is not None and value not in self.choices:
            raise UserError(f"{self.flag}: expected one of {', '.join(map(str, self.choices))} for the "
                            f"{family} family, got {value!r}")
        return value


def option(default: Any = None, check: Any = None, help: str = "", *, choices: Any = None,  # noqa: A002
           kind: str = "value", metavar: str | None = None, loads: str | None = None) -> Any:
    """A field of an :class:`Options` type: its default, check, help text and choices, in one place."""
    if kind not in KINDS:
        raise ValueError(f"option kind must be one of {KINDS}")
    meta = {"check": check, "help": help, "choices": tuple(choices) if choices is not None else None,
            "kind": kind, "metavar": metavar, "loads": loads}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class Options(Mapping):
    """Base of every options type. ``family`` (a class attribute) names whose options they are in
    messages."""

    family: ClassVar[str] = ""

    @classmethod
    def specs(cls) -> list[OptionSpec]:
        out = []
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore
            meta = f.metadata
            out.append(OptionSpec(f.name, default, meta.get("check"), meta.get("help", ""),
                                  meta.get("choices"), meta.get("kind", "value"), meta.get("metavar"),
                                  meta.get("loads")))
        return out

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def build(cls: type[T], values: Mapping[str, Any] | None = None, family: str | None = None,
              *, none_is_default: bool = True) -> T:
        """Options from keyword values: an unknown name is a UserError naming it and the family; every
        value is checked. None (an unset flag) takes the field's default."""
        family = family or cls.family or "this"
        values = dict(values or {})
        specs = {s.name: s for s in cls.specs()}
        unknown = [k for k in values if k not in specs]
        if unknown:
            raise unknown_option_error(unknown[0], family, list(specs))
        kwargs = {}
        for name, value in values.items():
            if value is None and none_is_default:
                continue
            kwargs[name] = specs[name].parse(value, family)
        return cls(**kwargs)

    def replace(self: T, **changes: Any) -> T:
        """A copy with some values changed (checked as :meth:`build` checks)."""
        return type(self).build({**dict(self), **changes}, none_is_default=False)

    def explicit(self) -> dict[str, Any]:
        """The values that differ from the defaults."""
        return {s.name: self[s.name] for s in self.specs() if self[s.name] != s.default}

    # a read-only mapping over the fields, for code that reads option dicts
    def __getitem__(self, key: str) -> Any:
        if key not in self.names():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(dataclasses.fields(self))


def unknown_option_error(name: str, family: str, known: list[str], what: str = "option") -> UserError:
    """The one line for an option a family does not take."""
    flag = "--" + name.replace("_", "-")
    near = _nearest(name, known)
    hint = f"; did you mean --{near.replace('_', '-')}?" if near else ""
    return UserError(f"{flag}: not a{'n' if what[0] in 'aeiou' else ''} {what} of the {family} family{hint} "
                     f"(its {what}s: {', '.join('--' + k.replace('_', '-') for k in known) or 'none'})")


def _nearest(name: str, known: list[str]) -> str | None:
    import difflib

    match = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
    return match[0] if match else None


# ----------------------------------------------------------------------------------------------- argparse

def add_arguments(parser: argparse.ArgumentParser | Any, options: type[Options], *,
                  unset_defaults: bool = False, family: str | None = None) -> None:
    """One flag per field. A flag another options type already added (two families' ``--steps``) is
    added once: its help gains this family's text, its choices the union (each family checks its own
    when the options are built). With ``unset_defaults`` an unset flag is None in the namespace, "not
    given", whatever its default (each family checks the values again when its options are built)."""
    container = parser
    root = getattr(parser, "_container", parser)  # an argument group's parser
    family = family or options.family
    for spec in options.specs():
        existing = next((a for a in root._actions if spec.flag in a.option_strings), None)
        if existing is not None:
            _merge(existing, spec, family)
            continue
        kwargs: dict[str, Any] = {"dest": spec.name, "help": spec.help_text().replace("%", "%%")}
        if spec.kind == "switch":
            kwargs["action"] = "store_true"
        elif spec.kind == "repeat":
            kwargs["action"] = "append"
        if spec.kind != "switch":
            if spec.choices is not None:
                kwargs["choices"] = list(spec.choices)
            if spec.check is not None:
                kwargs["type"] = spec.check
            if spec.metavar:
                kwargs["metavar"] = spec.metavar
        if unset_defaults:
            kwargs["default"] = None
        else:
            kwargs["default"] = None if spec.kind == "repeat" else spec.default
        container.add_argument(spec.flag, **kwargs)


def _merge(action: argparse.Action, spec: OptionSpec, family: str) -> None:
    if repr(action.type) != repr(spec.check):  # two checks: leave the value as text, each family checks it
        action.type = None
    if spec.choices is not None and action.choices is not None:
        action.choices = list(dict.fromkeys([*action.choices, *spec.choices]))
    text = spec.help_text().replace("%", "%%")
    if text and action.help and text not in action.help:
        action.help = f"{action.help}; {family}: {text}"
