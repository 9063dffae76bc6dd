"""Reusable checks of option values: argparse ``type=`` functions that refuse a bad value at parse time
with one line naming the accepted range, and the same checks for values from config files and API
keywords (:func:`check_value`).

    parser.add_argument("--steps", type=positive_int)
    parser.add_argument("--ema", type=finite_float(0, 1, hi_open=True))
    parser.add_argument("--channel-mult", type=int_list(lo=1))
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterable, Mapping
from typing import Any

from genzoo.errors import UserError


class Number:
    """An integer or float in [lo, hi] (either end open or absent); floats must be finite unless
    ``allow_inf``. Called with a string (argparse) it returns the parsed number."""

    def __init__(self, kind: type, lo: float | None = None, hi: float | None = None, *,
                 lo_open: bool = False, hi_open: bool = False, allow_inf: bool = False):
        self.kind, self.lo, self.hi = kind, lo, hi
        self.lo_open, self.hi_open, self.allow_inf = lo_open, hi_open, allow_inf
        self.__name__ = self.describe()  # argparse names the type in some messages

    def describe(self) -> str:
        noun = "an integer" if self.kind is int else ("a number" if self.allow_inf else "a finite number")
        lo, hi = self.lo, self.hi
        if lo is not None and hi is not None:
            return f"{noun} in {'(' if self.lo_open else '['}{lo:g}, {hi:g}{')' if self.hi_open else ']'}"
        if lo is not None:
            return f"{noun} {'>' if self.lo_open else '>='} {lo:g}"
        if hi is not None:
            return f"{noun} {'<' if self.hi_open else '<='} {hi:g}"
        return noun

    def parse(self, value: Any) -> int | float:
        """The checked number, or ValueError with the expectation."""
        try:
            if self.kind is int:
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError
                number: int | float = int(value) if not isinstance(value, str) else int(value.strip(), 10)
            else:
                if isinstance(value, bool):
                    raise ValueError
                number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected {self.describe()}, got {value!r}") from None
        if self.kind is float and (math.isnan(number) or (math.isinf(number) and not self.allow_inf)):
            raise ValueError(f"expected {self.describe()}, got {value!r}")
        too_low = self.lo is not None and (number <= self.lo if self.lo_open else number < self.lo)
        too_high = self.hi is not None and (number >= self.hi if self.hi_open else number > self.hi)
        if too_low or too_high:
            raise ValueError(f"expected {self.describe()}, got {value!r}")
        return number

    def __call__(self, text: str) -> int | float:
        try:
            return self.parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    def __repr__(self) -> str:
        return self.describe()


class NumberList:
    """A comma-separated list of numbers each checked by ``item``; kept as the normalised text
    (``"1,2,2"``), the form run configs store."""

    def __init__(self, item: Number, allow_empty: bool = False, words: tuple[str, ...] = ()):
        self.item, self.allow_empty, self.words = item, allow_empty, words
        self.__name__ = self.describe()

    def describe(self) -> str:
        text = f"a comma-separated list of {self.item.describe().replace('an integer', 'integers')}"
        return text + "".join(f" or {word!r}" for word in self.words)

    def parse(self, value: Any) -> str:
        if isinstance(value, str) and value.strip() in self.words:
            return value.strip()
        items = value if isinstance(value, (list, tuple)) else str(value).split(",")
        items = [str(v).strip() for v in items if str(v).strip()]
        if not items and not self.allow_empty:
            raise ValueError(f"expected {self.describe()}, got {value!r}")
        try:
            for item in items:
                self.item.parse(item)
        except ValueError:
            raise ValueError(f"expected {self.describe()}, got {value!r}") from None
        return ",".join(items)

    def __call__(self, text: str) -> str:
        try:
            return self.parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    def __repr__(self) -> str:
        return self.describe()


def int_range(lo: int | None = None, hi: int | None = None) -> Number:
    """An integer in [lo, hi]."""
    return Number(int, lo, hi)


def finite_float(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
                 hi_open: bool = False, allow_inf: bool = False) -> Number:
    """A finite float in the interval (ends closed unless ``lo_open``/``hi_open``)."""
    return Number(float, lo, hi, lo_open=lo_open, hi_open=hi_open, allow_inf=allow_inf)


def int_list(lo: int | None = None, hi: int | None = None, allow_empty: bool = False,
             words: tuple[str, ...] = ()) -> NumberList:
    """Comma-separated integers in [lo, hi], e.g. ``1,2,2`` (or one of ``words``, e.g. ``none``)."""
    return NumberList(Number(int, lo, hi), allow_empty, words)


def float_list(lo: float | None = None, hi: float | None = None) -> NumberList:
    """Comma-separated finite floats in [lo, hi], e.g. ``0,0.9``."""
    return NumberList(Number(float, lo, hi))


positive_int = int_range(1)
nonnegative_int = int_range(0)
any_int = int_range()
positive_float = finite_float(0, lo_open=True)
nonnegative_float = finite_float(0)
probability = finite_float(0, 1)
any_float = finite_float()


def device(text: str) -> str:
    """A torch device that exists here (``cpu``, ``cuda``, ``cuda:1``, ``mps``)."""
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a torch device (cpu, cuda, ...), got {text!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: CUDA is not available on this machine; use cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text!r}: there are {torch.cuda.device_count()} CUDA devices")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: MPS is not available on this machine; use cpu")
    return text


device.__name__ = "device"


def device_or_auto(text: str) -> str:
    """``auto`` (CUDA when available, ``cuda:LOCAL_RANK`` under torchrun; else cpu) or a :func:`device`."""
    return text if text == "auto" else device(text)


device_or_auto.__name__ = "device"


def check_value(flag: str, value: Any, checker: Any) -> Any:
    """Check a value from a config file or an API keyword with a checker of this module; UserError
    naming ``flag`` when it fails. None passes (an unset option)."""
    if value is None or not hasattr(checker, "parse"):
        return value
    try:
        return checker.parse(value)
    except ValueError as err:
        raise UserError(f"{flag}: {err}") from None


def check_config(config: Mapping[str, Any], actions: Iterable[argparse.Action]) -> dict[str, Any]:
    """Check every key of ``config`` whose flag has a checker of this module as its ``type``; returns
    the config with the parsed values (a key ``batch_per_device`` is the flag ``--batch-per-device``)."""
    checked = dict(config)
    for action in actions:
        if action.dest in checked and hasattr(action.type, "parse"):
            flag = action.option_strings[-1] if action.option_strings else action.dest
            checked[action.dest] = check_value(flag, checked[action.dest], action.type)
    return checked
