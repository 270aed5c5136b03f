"""Click parameter types with ranges, so a bad option value fails before any work, naming the option."""
from __future__ import annotations

import math
import re

import click

from mtssl.run.settings_table import SETTINGS, Setting
from mtssl.run.values import DEVICE_HELP, DEVICE_PATTERN, check_budget
from mtssl.spec import parse_value

POSITIVE_INT = click.IntRange(min=1)


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


class Matching(click.ParamType):
    """A string matching ``pattern`` (e.g. a device: availability is checked when it is used)."""

    def __init__(self, pattern: str, name: str, allowed: str):
        self.pattern, self.name, self.allowed = pattern, name, allowed

    def convert(self, value, param, ctx):
        text = str(value).strip()
        if not re.fullmatch(self.pattern, text):
            self.fail(f"{value!r} is not a {self.name}; use {self.allowed}", param, ctx)
        return text


class Checked(click.ParamType):
    """A string that ``check`` accepts (it raises ValueError with the problem otherwise)."""

    def __init__(self, check, name: str):
        self.check, self.name = check, name

    def convert(self, value, param, ctx):
        try:
            return self.check(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


NON_NEGATIVE_FLOAT = FiniteFloat(0.0)
DEVICE = Matching(DEVICE_PATTERN, "device", DEVICE_HELP)


def option_budget(option: str, text: str) -> int | str:
    """``--TASK-labels N|all`` -> N or 'all', else a UsageError naming the option."""
    try:
        return check_budget(parse_value(text))
    except ValueError as exc:
        raise click.UsageError(f"{option}: {exc}") from None


def option_number(option: str, text: str, setting: Setting) -> float:
    """A per-task number flag (``--TASK-val-fraction F``) within its setting's range."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and setting.contains(value)):
        raise click.UsageError(f"{option}: expected a number with {setting.bounds(setting.metavar or 'x')}, "
                               f"got {text!r}")
    return value


def setting_type(setting: Setting) -> click.ParamType:
    """The click type that checks a setting's value as its declaration says, before any work starts."""
    if setting.choices:
        return click.Choice(setting.choices)
    if setting.kind == "int":
        return click.IntRange(setting.low, setting.high, min_open=setting.low_open, max_open=setting.high_open)
    if setting.kind == "float":
        return FiniteFloat(setting.low, setting.high, setting.low_open, setting.high_open)
    if setting.pattern:
        return Matching(setting.pattern, setting.key, setting.allowed or setting.pattern)
    if setting.check:
        return Checked(setting.check, setting.key)
    return click.STRING


def listed(ctx, param, value):
    """A list setting's value: every repeat of the flag, or one comma-separated value; None when not given."""
    if not value:
        return None
    return list(value) if param.multiple else [item for item in value.split(",") if item]


def setting_option(setting: Setting, grid: bool = False):
    """The click option of one setting; not given, its value is None (the config file's or default holds)."""
    help_text = setting.full_help(grid)
    if setting.kind == "bool":
        flag = f"{setting.option}/--no-{setting.option[2:]}" if setting.negatable else setting.option
        return click.option(flag, setting.key, is_flag=True, default=None, help=help_text)
    if setting.kind == "list":
        return click.option(setting.option, setting.key, multiple=setting.repeat, callback=listed,
                            metavar=setting.metavar, help=help_text)
    return click.option(setting.option, setting.key, type=setting_type(setting), metavar=setting.metavar,
                        help=help_text)


def setting_options(grid: bool = False):
    """Decorate a command with an option per setting that has a flag (``grid``: per setting a grid offers)."""
    chosen = [s for s in SETTINGS if s.option and (s.grid == "flag" or not grid)]

    def decorate(command):
        for setting in reversed(chosen):
            command = setting_option(setting, grid)(command)
        return command

    return decorate
