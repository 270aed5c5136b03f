"""Click parameter types with ranges, so a bad option value fails before any work, naming the option."""
from __future__ import annotations

import math
import re

import click

from mtssl.run.values import DEVICE_HELP, DEVICE_PATTERN, check_budget, check_run_name
from mtssl.spec import parse_value

POSITIVE_INT = click.IntRange(min=1)
NON_NEGATIVE_INT = click.IntRange(min=0)


class FiniteFloat(click.ParamType):
    """A finite float within ``(low, high)`` bounds; ``low_open`` excludes the lower bound."""

    name = "number"

    def __init__(self, low: float | None = None, high: float | None = None, low_open: bool = False,
                 high_open: bool = False):
        self.low, self.high, self.low_open, self.high_open = low, high, low_open, high_open

    def describe(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"x{'>' if self.low_open else '>='}{self.low:g}")
        if self.high is not None:
            parts.append(f"x{'<' if self.high_open else '<='}{self.high:g}")
        return " and ".join(parts) or "any finite number"

    def convert(self, value, param, ctx):
        if isinstance(value, float) and math.isfinite(value):
            number = value
        else:
            try:
                number = float(value)
            except (TypeError, ValueError):
                self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        low_bad = self.low is not None and (number <= self.low if self.low_open else number < self.low)
        high_bad = self.high is not None and (number >= self.high if self.high_open else number > self.high)
        if low_bad or high_bad:
            self.fail(f"{value} is not in the range {self.describe()}", param, ctx)
        return number


class Device(click.ParamType):
    """auto, cpu, cuda, cuda:N or mps (availability is checked when the device is used)."""

    name = "device"

    def convert(self, value, param, ctx):
        text = str(value).strip()
        if not re.fullmatch(DEVICE_PATTERN, text):
            self.fail(f"{value!r} is not a device; use {DEVICE_HELP}", param, ctx)
        return text


class RunName(click.ParamType):
    """One plain folder name: a run directory never leaves ``--out``."""

    name = "name"

    def convert(self, value, param, ctx):
        try:
            return check_run_name(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


POSITIVE_FLOAT = FiniteFloat(0.0, low_open=True)
NON_NEGATIVE_FLOAT = FiniteFloat(0.0)
LEARNING_RATE = FiniteFloat(0.0, 1e30, low_open=True)
"""Far above any useful rate, and below what torch can hold (a float32 overflows near 3.4e38)."""
DEVICE = Device()
RUN_NAME = RunName()


def option_budget(option: str, text: str) -> int | str:
    """``--TASK-labels N|all`` -> N or 'all', else a UsageError naming the option."""
    try:
        return check_budget(parse_value(text))
    except ValueError as exc:
        raise click.UsageError(f"{option}: {exc}") from None


def option_fraction(option: str, text: str) -> float:
    """``--TASK-val-fraction F`` with 0 <= F < 1."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0.0 <= value < 1.0):
        raise click.UsageError(f"{option}: expected a number with 0 <= F < 1, got {text!r}")
    return value
