"""The tutorial notebook (examples/tutorial.ipynb) runs top to bottom in a fresh process at its tiny size:
it trains, evaluates, predicts and reports through the Python API."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "tutorial.ipynb"


def notebook_script(path: Path) -> str:
    """The notebook's code cells, in order, as one script (what *Run all* executes)."""
    cells = json.loads(path.read_text())["cells"]
    return "\n\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")


def test_the_tutorial_notebook_runs_in_a_fresh_process(tmp_path):
    script = tmp_path / "tutorial.py"
    script.write_text(notebook_script(NOTEBOOK))
    env = {**os.environ, "MTSSL_TUTORIAL_TINY": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs" / "tutorial-tiny"
    assert "3 steps, last loss" in done.stdout
    assert "class probabilities:" in done.stdout and "saliency: (2, 32, 32)" in done.stdout
    assert (run / "report" / "index.html").exists()
    assert list(run.glob("eval-cls-*.json"))
