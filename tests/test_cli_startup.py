"""The command line starts without torch, and every command module imports on its own (no import cycle)."""
from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
from click.testing import CliRunner
from mtssl.cli import main
result = CliRunner().invoke(main, {args!r})
assert result.exit_code == 0, result.output
print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
"""


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["eval", "--help"], ["data", "--help"],
                                  ["bench", "--help"]], ids=" ".join)
def test_help_imports_no_torch(args):
    out = subprocess.run([sys.executable, "-c", PROBE.format(args=args)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("module", ["mtssl.cli_common", "mtssl.cli_data", "mtssl.cli_eval", "mtssl.cli_bench",
                                    "mtssl.cli"])
def test_each_command_module_imports_on_its_own(module):
    out = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
