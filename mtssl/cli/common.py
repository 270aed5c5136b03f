"""What every ``mtssl`` command shares: error handling and per-task data options.

Kept apart from :mod:`mtssl.cli.app` so each command module imports it without
importing the command group (no import cycle), and free of torch so
``mtssl --help`` starts fast.
"""
from __future__ import annotations

import functools
import re
import sys

import click
from rich.console import Console

from mtssl.cli.params import POSITIVE_INT, option_budget, option_number
from mtssl.data.pixel_limit import DEFAULT_MAX_PIXELS
from mtssl.errors import CheckpointError, ConfigError
from mtssl.console.output import say
from mtssl.plugin_faults import attribute, debugging, print_traceback
from mtssl.plugins import PluginError
from mtssl.registry import RegistryError
from mtssl.run.runlock import RunLockedError
from mtssl.run.settings_table import DATA_SETTINGS
from mtssl.spec import SpecError

USER_ERRORS = (ValueError, RegistryError, SpecError, ConfigError, CheckpointError, PluginError, RunLockedError,
               OSError)

TASK_DATA = {setting.option.removeprefix("--TASK-"): setting for setting in DATA_SETTINGS}
"""``--TASK-SUFFIX`` flag suffix -> the data setting it gives."""
TASK_DATA_OPTION = re.compile(rf"^--(?P<task>[A-Za-z0-9_]+)-(?P<field>{'|'.join(TASK_DATA)})$")


checkpoint_option = click.option("--checkpoint", default="best", show_default=True,
                                 help="best, last, or a path to a .safetensors checkpoint.")


def err_console() -> Console:
    return Console(stderr=True)


def friendly_errors(command):
    """Turn user mistakes (exit status 2) and plugin faults (status 1) into one red line instead of a traceback.

    A fault is any exception from plugin code that is not a message for the user; the line names the
    component, its plugin and distribution and where it failed (:mod:`mtssl.plugin_faults`). Other
    exceptions are the core's bugs and keep their traceback; ``MTSSL_DEBUG=1`` shows it for all.
    """

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except Exception as exc:
            fault = attribute(exc)
            if fault is None and not isinstance(exc, USER_ERRORS):
                raise
            if debugging():
                print_traceback(fault or exc)
            say(err_console(), "Error:", "bold red", describe_error(fault or exc, getattr(exc, "__notes__", ())))
            sys.exit(1 if fault else 2)

    return wrapper


def describe_error(exc: BaseException, notes=()) -> str:
    """One line for the user; an OS error (disk full, read-only folder) names its file; notes follow."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        text = f"{where}{exc.strerror}"
    else:
        text = " ".join(str(exc).split("\n")) or type(exc).__name__
    return "; ".join([text, *notes])


max_pixels_option = click.option(
    "--max-pixels", type=POSITIVE_INT, default=DEFAULT_MAX_PIXELS, show_default=True,
    help="Refuse images with more pixels than this (read from the file header, before decoding).")


def parse_task_data_args(args: list[str]) -> dict[str, dict]:
    """Read ``--TASK-data SPEC``, ``--TASK-labels N|all``, ``--TASK-val SPEC``, ``--TASK-test SPEC`` and the
    other flags of :data:`~mtssl.run.settings_table.DATA_SETTINGS` into ``{task: {key: value}}``."""
    result: dict[str, dict] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        name, _, inline = arg.partition("=")
        match = TASK_DATA_OPTION.match(name)
        if not match:
            known = ", ".join(f"{s.option} {s.metavar}" for s in DATA_SETTINGS)
            raise click.UsageError(f"no such option: {arg} (per-task data options look like {known})")
        if inline:
            value = inline
        else:
            if i + 1 >= len(args):
                raise click.UsageError(f"option {arg} needs a value")
            i += 1
            value = args[i]
        task, setting = match["task"], TASK_DATA[match["field"]]
        entry = result.setdefault(task, {})
        option = f"--{task}-{match['field']}"
        if setting.kind in ("str", "list") and not value.strip():
            raise click.UsageError(f"{option}: expected a data spec, got an empty value")
        if setting.kind == "list":
            entry.setdefault(setting.key, []).append(value)
        elif setting.kind == "budget":
            entry[setting.key] = option_budget(option, value)
        elif setting.kind == "float":
            entry[setting.key] = option_number(option, value, setting)
        else:
            entry[setting.key] = value
        i += 1
    return result
