"""The command line starts without torch, and every command module imports on its own (no import cycle)."""
from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from mtssl.cli.app import COMMANDS, main

PROBE = """
import sys
from click.testing import CliRunner
from mtssl.cli.app import main
result = CliRunner().invoke(main, {args!r})
assert result.exit_code == 0, result.output
print(sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r}))
"""


def loaded_after(args: list[str], heavy: set[str]) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(args=args, heavy=heavy)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return eval(out.stdout.strip().splitlines()[-1])


def test_top_level_help_imports_only_click():
    assert loaded_after(["--help"], {"torch", "numpy", "rich", "pydantic", "PIL", "mtssl_plugins"}) == []


@pytest.mark.parametrize("args", [["train", "--help"], ["plugins"]], ids=" ".join)
def test_train_help_and_plugin_listing_import_no_numerics_or_settings_rules(args):
    assert loaded_after(args, {"torch", "numpy", "PIL", "pydantic"}) == []


@pytest.mark.parametrize("args", [["eval", "--help"], ["data", "--help"], ["bench", "--help"], ["export", "--help"]],
                         ids=" ".join)
def test_commands_import_no_torch(args):
    assert loaded_after(args, {"torch"}) == []


@pytest.mark.parametrize("module", sorted({m for m, _, _ in COMMANDS.values()} | {"mtssl.cli.common", "mtssl.cli"}))
def test_each_command_module_imports_on_its_own(module):
    out = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("name", list(COMMANDS))
def test_listed_summary_is_the_commands_own(name):
    command = main.get_command(click.Context(main), name)
    assert command.name == name
    assert COMMANDS[name][2] == command.get_short_help_str(limit=200)


def test_unknown_command_is_a_usage_error():
    result = CliRunner().invoke(main, ["trian"])
    assert result.exit_code == 2 and "No such command 'trian'" in result.output


def test_python_dash_m_runs_the_same_command_line():
    out = subprocess.run([sys.executable, "-m", "mtssl", "--help"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Usage: mtssl [OPTIONS] COMMAND") and "train" in out.stdout
