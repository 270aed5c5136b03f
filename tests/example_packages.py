"""The example plugin packages under examples/, installed as a user installs them: pip and their own pyproject.toml."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def install_example(tmp_path_factory, folder: str, distribution: str) -> Path:
    """pip-install ``examples/FOLDER`` (with its ``mtssl`` entry points) into a folder of its own; return it."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(EXAMPLES / folder)], check=True, capture_output=True)
    assert list(target.glob(f"{distribution.replace('-', '_')}-*.dist-info"))
    return target


def mtssl_with(site: Path, *args: str) -> subprocess.CompletedProcess:
    """The ``mtssl`` command in a child process that also sees the packages installed in ``site``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", "from mtssl.cli.app import main; main()", *args], capture_output=True,
                          text=True, env=env, timeout=600)
